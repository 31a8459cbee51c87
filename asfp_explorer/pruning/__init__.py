"""Filter pruning: criteria (scores), masks (selection, zeroing), and the soft/hard algorithm."""
