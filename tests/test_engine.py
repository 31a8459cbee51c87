"""The training loop: event order, observers, soft revival, hard pruning, steering."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading

import numpy as np
import pytest

from asfp_explorer.config import ConfigError
from asfp_explorer.engine import EventKind, RunHandle, Trainer
from support import tiny_config


def record(events):
    def observer(e):
        events.append(e)
    return observer


def test_exact_event_order():
    events = []
    cfg = tiny_config(pruning={"interval": 2})  # 3 epochs: masks at e = 0, 2 and 3 (last)
    Trainer(cfg, [record(events)]).run()
    got = [(e.kind.value, e.epoch) for e in events]
    assert got == [
        ("run_start", 0),
        ("masks_updated", 0), ("evaluated", 0), ("epoch_end", 0),
        ("evaluated", 1), ("epoch_end", 1),  # no mask epoch: one (plain) evaluation
        ("evaluated", 2), ("masks_updated", 2), ("evaluated", 2), ("epoch_end", 2),
        ("evaluated", 3), ("masks_updated", 3), ("evaluated", 3), ("epoch_end", 3),
        ("run_end", 3),
    ]
    assert events[-1].data["status"] == "finished"
    masked_flags = [e.data["masked"] for e in events if e.kind is EventKind.EVALUATED]
    assert masked_flags == [True, False, False, True, False, True]


def test_final_model_is_masked_at_target_ratio():
    events = []
    t = Trainer(tiny_config(pruning={"prune_ratio": 0.3}), [record(events)])
    t.run()
    last = [e.data for e in events if e.kind is EventKind.EPOCH_END][-1]
    assert last.prune_ratio == 0.3
    for name, conv in t.convs.items():
        norms = conv.weight.detach().flatten(1).norm(dim=1)
        zero = int((norms == 0).sum())
        assert zero == int(np.floor(conv.out_channels * 0.3 + 1e-9)), name
        assert t.pruning.masks[name].tolist() == (norms > 0).tolist()


def test_snapshots_are_immutable_and_observer_errors_detach():
    seen = []

    def bad(e):
        if e.kind is EventKind.EPOCH_END:
            raise RuntimeError("boom")

    def mutator(e):
        if e.kind is EventKind.EPOCH_END:
            with pytest.raises(ValueError):
                e.data.masks[0][0] = False  # read-only array
            with pytest.raises(dataclasses.FrozenInstanceError):
                e.data.epoch = 99
            seen.append(e.epoch)

    t = Trainer(tiny_config(), [bad, mutator])
    with pytest.warns(RuntimeWarning, match="boom"):
        status = t.run()
    assert status == "finished"
    assert seen == [0, 1, 2, 3]
    assert len(t.observer_errors) == 1 and "detached" in t.observer_errors[0]


def test_soft_filters_revive_and_hard_filters_never_do():
    def run(method):
        events = []
        Trainer(tiny_config(pruning={"method": method, "prune_ratio": 0.4},
                            training={"epochs": 3}), [record(events)]).run()
        return [e.data for e in events if e.kind is EventKind.EPOCH_END]

    soft = run("sfp")
    hard = run("hard-sfp")
    # Revivals recomputed independently from consecutive masks.
    for snaps in (soft, hard):
        for prev, cur in zip(snaps, snaps[1:]):
            ref = tuple(int((~p & c).sum()) for p, c in zip(prev.masks, cur.masks))
            assert cur.revived == ref
    assert sum(sum(s.revived) for s in soft) > 0
    assert sum(sum(s.revived) for s in hard) == 0
    # hard: once pruned, a filter stays pruned
    for prev, cur in zip(hard, hard[1:]):
        for p, c in zip(prev.masks, cur.masks):
            assert not np.any(~p & c)


def test_hard_pruned_weights_stay_zero_during_training():
    t = Trainer(tiny_config(pruning={"method": "hard-sfp"}, training={"epochs": 1}))
    t.pruning.update_masks(0)
    x, y = next(iter(t.train_loader))
    import torch.nn.functional as F
    for _ in range(3):
        loss = F.cross_entropy(t.model(x), y)
        t.optimizer.zero_grad()
        loss.backward()
        t.pruning.before_step()
        t.optimizer.step()
        t.pruning.after_step()
    for name, conv in t.convs.items():
        assert conv.weight.detach()[~t.pruning.masks[name]].abs().sum() == 0


def test_parameter_change_applies_at_next_boundary_and_is_recorded():
    events = []
    handle = RunHandle(tiny_config(training={"epochs": 4}), observers=[record(events)])
    changed = threading.Event()

    def steer(e):
        if e.kind is EventKind.EPOCH_END and e.epoch == 1 and not changed.is_set():
            handle.update(pruning={"prune_ratio": 0.2, "method": "sfp"})
            changed.set()

    handle.trainer.add_observer(steer)
    handle.run()
    kinds = [(e.kind.value, e.epoch) for e in events]
    i = kinds.index(("parameters_changed", 1))
    assert kinds[i - 1] == ("epoch_end", 1)
    snaps = {e.epoch: e.data for e in events if e.kind is EventKind.EPOCH_END}
    assert snaps[2].prune_ratio == 0.2 and snaps[4].prune_ratio == 0.2
    assert snaps[1].prune_ratio != 0.2
    pc = events[i].data
    assert pc["changes"] == {"pruning": {"prune_ratio": 0.2, "method": "sfp"}}


def test_refused_changes_have_one_line_errors():
    handle = RunHandle(tiny_config())
    with pytest.raises(ConfigError, match=r"^training\.batch_size: cannot change"):
        handle.update(training={"batch_size": 3})
    with pytest.raises(ConfigError, match=r"^pruning\.d: "):
        handle.update(pruning={"d": 0.9})


def test_background_run_pause_resume_stop():
    events = []
    handle = RunHandle(tiny_config(training={"epochs": 50}), observers=[record(events)])
    first = threading.Event()
    handle.trainer.add_observer(lambda e: first.set() if e.kind is EventKind.EPOCH_END and e.epoch >= 1 else None)
    handle.start()
    assert first.wait(60)
    handle.pause()
    n = handle.epoch
    assert handle.held.wait(60)  # the training thread waits at a boundary
    held_at = handle.epoch
    assert held_at <= n + 1  # at most the epoch in progress finishes
    assert events[-1].kind is EventKind.EPOCH_END and events[-1].epoch == held_at
    handle.resume()
    handle.stop()
    assert handle.wait(60) == "stopped"
    assert events[-1].kind is EventKind.RUN_END and events[-1].data["status"] == "stopped"
    assert handle.epoch < 50


def test_importing_the_engine_loads_no_plotly_or_ipywidgets():
    code = ("import sys, asfp_explorer.engine, asfp_explorer.store, asfp_explorer.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('plotly', 'ipywidgets')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
