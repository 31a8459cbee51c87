"""asfp_explorer: see and steer (Asymptotic) Soft Filter Pruning of CNNs.

The core (config, schedules, models, pruning, flops, engine, store) never imports plotly
or ipywidgets; the live views live in `asfp_explorer.viz`.
"""

__version__ = "0.1.0"
