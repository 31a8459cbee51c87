"""The store's one error type."""

from __future__ import annotations


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message is one line."""
