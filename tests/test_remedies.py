"""The opt-in remedies beyond the paper (adaptive BN, mask BN) and the mechanism diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from asfp_explorer.config import ConfigError, RunConfig
from asfp_explorer.engine import EventKind, Trainer
from asfp_explorer.engine.trainer import _diagnostics
from asfp_explorer.models import build_model
from asfp_explorer.pruning.batchnorm import batchnorms_after, recalibrate
from asfp_explorer.schedules import pruned_count


def config(**sections) -> RunConfig:
    base = RunConfig().with_changes(training={"epochs": 3, "device": "cpu"},
                                    data={"batch_size": 64})
    return base.with_changes(**sections) if sections else base


def snapshots(cfg: RunConfig) -> tuple[Trainer, list]:
    snaps: list = []
    trainer = Trainer(cfg, [lambda e: snaps.append(e.data) if e.kind is EventKind.EPOCH_END else None])
    trainer.run()
    return trainer, snaps


# ----------------------------------------------------------------------------- diagnostics


def test_diagnostics_by_hand():
    norms = (np.array([0.0, 2.0, 3.0, 1.0]), np.array([0.0, 0.0, 5.0]))
    prev = (np.array([False, False, True, True]), np.array([True, True, True]))
    d = _diagnostics(norms, prev)
    assert d["dead"] == (1, 0)  # a kept filter at zero is not dead: it was not pruned
    assert d["pruned_norm_median"] == (1.0, None)
    assert d["kept_norm_median"] == (2.0, 0.0)


def test_hard_pruning_dead_equals_previous_pruned_counts():
    """In hard mode every pruned filter is held at exactly zero: all of them are dead."""
    _, snaps = snapshots(config(pruning={"method": "hard-sfp", "prune_ratio": 0.4}))
    for before, now in zip(snaps, snaps[1:]):
        assert now.dead == before.pruned
        assert all(m == 0.0 for m in now.pruned_norm_median if m is not None)


def test_sfp_from_scratch_kills_the_stem_filters_for_good():
    """Spec "What actually happens": at SFP's first mask beta = 0, so the stem's zeroed
    filters feed exactly 0 into ReLU and never get a gradient; ASFP prunes nothing at e = 0."""
    _, sfp = snapshots(config(pruning={"method": "sfp", "prune_ratio": 0.4}))
    stem = pruned_count(16, 0.4)
    assert [s.dead[0] for s in sfp[1:]] == [stem] * 3
    _, asfp = snapshots(config(pruning={"method": "asfp", "prune_ratio": 0.4}))
    assert sum(asfp[1].dead) == 0
    assert asfp[0].metrics()["dead_total"] == 0 and asfp[0].metrics()["acc_gap"] is None


def test_realised_ratio_and_unmasked_labels_between_updates():
    """interval 2: after epoch 1 the masks still hold P(0) = 0 for ASFP, and the model the
    epoch evaluates was never masked."""
    trainer, snaps = snapshots(config(pruning={"method": "asfp", "interval": 2}))
    one = snaps[1]
    assert not one.masks_updated
    assert one.prune_ratio > 0 and one.realised_ratio == 0.0
    assert one.test_acc_masked is None and one.test_acc_unmasked is not None
    assert one.paper_macs == pytest.approx(trainer.macs.paper_macs(0.0))
    last = snaps[-1]
    total = sum(trainer.layer_sizes)
    assert last.realised_ratio == pytest.approx(sum(last.pruned) / total)
    assert last.pruned == tuple(int((~m).sum()) for m in last.masks)
    # On schedule, the paper convention keeps the fractional ratio (the published tables).
    assert last.paper_macs == pytest.approx(trainer.macs.paper_macs(0.4))


# ----------------------------------------------------------------------------- adaptive BN


def test_recalibrate_gives_the_average_of_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[1].running_mean.fill_(7.0)  # stale numbers that must be replaced
    batches = [(torch.randn(8, 3, 6, 6) * (i + 1), None) for i in range(3)]
    recalibrate(model, batches + [(torch.full((8, 3, 6, 6), 1e6), None)], max_batches=3)
    with torch.no_grad():
        outs = [model[0](x) for x, _ in batches]
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.transpose(0, 1).flatten(1).var(1, unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert model[1].momentum == 0.1  # restored


def test_adaptive_bn_leaves_training_batches_alone():
    """Statistics are re-estimated from a loader of their own: training is unchanged."""
    _, plain = snapshots(config(pruning={"method": "sfp"}))
    _, adapted = snapshots(config(pruning={"method": "sfp", "adaptive_bn_batches": 4}))
    # Training uses batch statistics, so weights, losses and masks stay identical; only the
    # running statistics (hence the evaluations) differ.
    assert [s.train_loss for s in plain] == [s.train_loss for s in adapted]
    assert [[m.tolist() for m in s.masks] for s in plain] == [[m.tolist() for m in s.masks] for s in adapted]
    assert [s.test_acc_masked for s in plain] != [s.test_acc_masked for s in adapted]


# ----------------------------------------------------------------------------- mask BN


def test_batchnorms_after_maps_each_resnet_conv_to_its_bn():
    model = build_model("resnet20", 10, 3)
    names = model.prunable_conv_names()
    found = batchnorms_after(model, names, (3, 32, 32))
    modules = dict(model.named_modules())
    expected = {n: modules[n.replace("conv", "bn")] for n in names}  # the ResNet's own naming
    assert found.keys() == expected.keys()
    assert all(found[n] is expected[n] for n in names)


@pytest.mark.parametrize("method", ["sfp", "hard-asfp"])
def test_mask_bn_zeroes_gamma_and_beta_of_pruned_channels(method):
    trainer, snaps = snapshots(config(pruning={"method": method, "mask_bn": True}))
    modules = dict(trainer.model.named_modules())
    final = snaps[-1]
    for name, mask in zip(final.layer_names, final.masks):
        bn = modules[name.replace("conv", "bn")]
        assert torch.all(bn.weight.detach()[torch.from_numpy(~mask)] == 0)
        assert torch.all(bn.bias.detach()[torch.from_numpy(~mask)] == 0)
        assert torch.all(bn.weight.detach()[torch.from_numpy(mask)] != 0)


def test_remedies_are_named_and_validated():
    assert RunConfig().pruning.remedies == ()
    cfg = RunConfig().with_changes(pruning={"adaptive_bn_batches": 8, "mask_bn": True})
    assert cfg.pruning.remedies == ("adaptive-bn", "mask-bn")
    with pytest.raises(ConfigError, match="pruning.adaptive_bn_batches"):
        RunConfig().with_changes(pruning={"adaptive_bn_batches": -1})
    with pytest.raises(ConfigError, match="pruning.mask_bn"):
        RunConfig().with_changes(pruning={"mask_bn": "yes"})


def test_cli_flags_reach_the_config():
    from asfp_explorer.cli import build_parser
    from asfp_explorer.commands.train import config_from_args

    args = build_parser().parse_args(["train", "--adaptive-bn", "5", "--mask-bn"])
    cfg = config_from_args(args)
    assert cfg.pruning.adaptive_bn_batches == 5 and cfg.pruning.mask_bn is True
    default = config_from_args(build_parser().parse_args(["train"]))
    assert default.pruning.remedies == ()
