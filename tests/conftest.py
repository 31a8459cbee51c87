"""Shared fixtures: tiny real runs on the offline digits data set, and the CIFAR subset path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asfp_explorer.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"

torch.set_num_threads(2)


def gpu_available() -> bool:
    return torch.cuda.is_available()


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_config(**sections) -> RunConfig:
    """A few-second run: digits, ResNet-20, small batches."""
    base = RunConfig().with_changes(training={"epochs": 3, "device": "cpu"},
                                    data={"batch_size": 64})
    return base.with_changes(**sections) if sections else base


@pytest.fixture(scope="session")
def finished_run_dir(tmp_path_factory) -> Path:
    """A finished 3-epoch ASFP run directory, shared by read-only tests."""
    from asfp_explorer.engine import RunHandle

    out = tmp_path_factory.mktemp("runs") / "asfp"
    RunHandle(tiny_config(), out).run()
    return out
