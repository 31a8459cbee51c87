"""Helpers shared by the test modules (imported by name; fixtures live in conftest.py).

Tiny real runs on the offline digits data set, the CIFAR subset path, torch on one thread,
and a stand-in widget comm that counts what a widget sends. pytest puts tests/ on the path.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import pytest
import torch

from asfp_explorer.config import RunConfig
from asfp_explorer.engine.events import Event

ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_config(**sections) -> RunConfig:
    """A few-second run: digits, ResNet-20, 3 epochs, batches of 64, on the CPU."""
    base = RunConfig().with_changes(training={"epochs": 3, "device": "cpu"},
                                    data={"batch_size": 64})
    return base.with_changes(**sections) if sections else base


@contextlib.contextmanager
def one_thread():
    """Torch on one thread: these 8x8 models gain nothing from more, and on a busy 2-core
    machine two threads spin against other processes (runs took 5x longer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EventLog:
    """Observer that keeps every event (to replay a real run into a dashboard)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.__name__ = "EventLog"

    def __call__(self, event: Event) -> None:
        self.events.append(event)


class CountingComm:
    """A stand-in comm that records what a widget sends (as in ipywidgets' own tests)."""

    comm_id = "counting-comm"
    kernel = "Truthy"  # ipywidgets sends only when the comm has a kernel

    def __init__(self) -> None:
        self.messages: list[tuple[dict, list]] = []

    def send(self, data=None, metadata=None, buffers=None, **kwargs) -> None:
        self.messages.append((data, list(buffers or [])))

    def open(self, *args, **kwargs) -> None:
        pass

    def on_msg(self, *args, **kwargs) -> None:
        pass

    def close(self, *args, **kwargs) -> None:
        pass

    def bytes(self, start: int = 0) -> int:
        """Size of the messages from `start` on, as JSON plus binary buffers."""
        return sum(len(json.dumps(d, default=str)) + sum(len(memoryview(b).cast("B")) for b in bufs)
                   for d, bufs in self.messages[start:])

    def clear(self) -> None:
        self.messages.clear()


def attach(widget, comm: CountingComm | None = None) -> CountingComm:
    """Give `widget` a counting comm (a fresh one unless `comm` is passed)."""
    comm = comm or CountingComm()
    widget.comm = comm
    return comm


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BN statistics and affine parameters away from 0/1, so pruned filters output constants
    (as after training). The model's train/eval mode is left as it was."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.5
            m.running_mean = torch.randn(n, generator=g) * 0.5
            m.running_var = torch.rand(n, generator=g) * 1.5 + 0.5
    return model


def masked_reference(model: torch.nn.Module, masks) -> torch.nn.Module:
    """The masked model, written out plainly: zero the pruned filters' weights and biases."""
    ref = copy.deepcopy(model).eval()
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight[~mask] = 0
            if modules[name].bias is not None:
                modules[name].bias[~mask] = 0
    return ref


def assert_equivalent(model: torch.nn.Module, small: torch.nn.Module, masks, shape,
                      rtol: float = 1e-4) -> None:
    """`small` computes what the masked `model` does on a seeded input of `shape`, to `rtol`
    of the largest output."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = masked_reference(model, masks)(x)
        got = small(x)
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= rtol * want.abs().max().item(), err
