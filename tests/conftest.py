"""Shared fixtures: tiny real runs on the offline digits data set (helpers: support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from support import EventLog, one_thread, tiny_config

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def finished_run_dir(tmp_path_factory) -> Path:
    """A finished 3-epoch ASFP run directory, shared by read-only tests."""
    from asfp_explorer.engine import RunHandle

    out = tmp_path_factory.mktemp("runs") / "asfp"
    RunHandle(tiny_config(), out).run()
    return out


@pytest.fixture(scope="session")
def viz_runs(tmp_path_factory) -> dict[str, Path]:
    """Run directories: asfp (seed 0), sfp (seeds 0 and 1), hard-sfp; 3 epochs each.

    The asfp run also keeps its event list (`viz_runs["asfp_events"]`).
    """
    from asfp_explorer.engine import RunHandle

    root = tmp_path_factory.mktemp("viz_runs")
    out: dict = {}
    for name, pruning, seed in [("asfp", {"method": "asfp"}, 0), ("sfp0", {"method": "sfp"}, 0),
                                ("sfp1", {"method": "sfp"}, 1),
                                ("hard", {"method": "hard-sfp"}, 0)]:
        log = EventLog()
        cfg = tiny_config(pruning=pruning).with_changes(training={"seed": seed})
        with one_thread():
            RunHandle(cfg, root / name, [log]).run()
        out[name] = root / name
        out[f"{name}_events"] = log.events
    return out
