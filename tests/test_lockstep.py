"""Lockstep: the default engine against an independent re-implementation of the authors' loop.

The reference below is written from the spec (docs/method.md §4, §5, §8) after the authors'
SFP script (`he-y/soft-filter-pruning`, pruning_cifar10_resnet.py: train an epoch with plain
SGD, evaluate, re-rank every prunable conv's filters by ℓ2 norm and zero the floor(N P(e))
lowest, evaluate again). It shares nothing with the project's pruning or training code: only the model builder
(same initial weights) and the data loader (same batches in the same order). Same seed, same
thread count, same operations in the same order: every mask, revival count, accuracy and final
weight must be identical, bit for bit. If this test fails, the default engine no longer runs
the paper's method; that is never a tolerance to widen.
"""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asfp_explorer.config import DataConfig, RunConfig
from asfp_explorer.data import DeviceLoader, load_dataset
from asfp_explorer.engine import EventKind, Trainer
from asfp_explorer.models import build_model

EPOCHS = 3
SEED = 0


def asymptotic_ratio(e: int, total: int, target: str, d: str = "0.125") -> mpmath.mpf:
    """Spec §5 in 50-digit arithmetic: P(e) = a exp(-k e) + b through P(0) = 0,
    P(D T) = 3/4 P, P(T) = P; z = exp(-k D T) solves 3 (z^(1/D) - 1) = 4 (z - 1) in (0, 1)."""
    with mpmath.workdps(50):
        p, dd = mpmath.mpf(target), mpmath.mpf(d)
        lo, hi = mpmath.mpf(0), 1 - mpmath.mpf(10) ** -30
        for _ in range(200):  # f(0) = 1 > 0 and f < 0 just below 1 for D < 3/4
            mid = (lo + hi) / 2
            if 3 * (mid ** (1 / dd) - 1) - 4 * (mid - 1) > 0:
                lo = mid
            else:
                hi = mid
        if e == total:
            return p  # the spec forces P(T) = P exactly
        z = lo
        return mpmath.mpf(3) / 4 * p * (1 - z ** (mpmath.mpf(e) / (dd * total))) / (1 - z)


def reference_run(model: nn.Module, data, method: str, config: RunConfig) -> list[dict]:
    """The authors' soft filter pruning loop, slow and plain. Returns one record per epoch."""
    t = config.training
    target = str(config.pruning.prune_ratio)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]  # CIFAR ResNet: all (§3)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                          weight_decay=t.weight_decay)
    train = DeviceLoader(data, "train", config.data.batch_size, True, False, seed=t.seed)
    test = DeviceLoader(data, "test", max(config.data.batch_size, 256), False, False)
    # spec §8 scaled to T: x0.2 at 30, 60, 80 % of the epochs (an epoch that two fractions
    # round to decays once), never before epoch 1
    milestones = {max(1, round(f * EPOCHS)) for f in t.lr_milestones}

    def ratio(e):
        return mpmath.mpf(target) if method == "sfp" else asymptotic_ratio(e, EPOCHS, target)

    @torch.no_grad()
    def correct():
        model.eval()
        n = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
        model.train()
        return n

    @torch.no_grad()
    def mask(e):
        kept = []
        for conv in convs:
            w = conv.weight.detach().double().flatten(1)
            n = w.shape[0]
            norms = [math.sqrt(sum(v * v for v in row)) for row in w.tolist()]
            count = min(int(mpmath.floor(n * ratio(e))), n - 1)  # never all (§2)
            order = sorted(range(n), key=lambda i: (norms[i], i))
            keep = [True] * n
            for i in order[:count]:
                keep[i] = False
                conv.weight[i] = 0
            kept.append(keep)
        return kept

    records = []
    masks = mask(0)
    records.append({"masks": masks, "revived": [0] * len(convs), "unmasked": None,
                    "masked": correct()})
    model.train()
    for e in range(1, EPOCHS + 1):
        for group in opt.param_groups:
            group["lr"] = t.lr * t.lr_gamma ** sum(e - 1 >= m for m in milestones)
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        unmasked = correct()
        previous, masks = masks, mask(e)
        revived = [sum(not a and b for a, b in zip(p, m)) for p, m in zip(previous, masks)]
        records.append({"masks": masks, "revived": revived, "unmasked": unmasked,
                        "masked": correct()})
    return records


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"))


@pytest.mark.parametrize("method", ["sfp", "asfp"])
def test_default_engine_runs_in_lockstep_with_the_reference(method, digits):
    config = RunConfig().with_changes(pruning={"method": method},
                                      training={"epochs": EPOCHS, "device": "cpu", "seed": SEED})
    assert config.pruning == RunConfig().pruning.__class__(method=method)  # the defaults
    events = []
    trainer = Trainer(config, [events.append], dataset=digits)

    torch.manual_seed(SEED)  # the builder's initial weights, independently of the trainer
    model = build_model(config.model.name, digits.num_classes, digits.input_size[0])
    start = trainer.model.state_dict()
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())

    expected = reference_run(model, digits, method, config)
    assert trainer.run() == "finished"
    snaps = [e.data for e in events if e.kind is EventKind.EPOCH_END]
    n_test = len(digits.y_test)
    assert len(snaps) == len(expected) == EPOCHS + 1
    for snap, ref in zip(snaps, expected):
        e = snap.epoch
        assert [m.tolist() for m in snap.masks] == ref["masks"], f"masks at epoch {e}"
        assert list(snap.revived) == ref["revived"], f"revivals at epoch {e}"
        assert round(snap.test_acc_masked * n_test) == ref["masked"], f"masked acc, epoch {e}"
        if ref["unmasked"] is not None:
            assert round(snap.test_acc_unmasked * n_test) == ref["unmasked"], f"epoch {e}"
    final = trainer.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, final[name]), f"final {name} differs"
    # the schedule did something: filters were pruned, and (soft) some revived in ASFP
    assert sum(not k for keep in expected[-1]["masks"] for k in keep) > 0
