"""Speed options beyond the paper's recipe: skip the unmasked evaluation, bf16 autocast,
channels_last, torch.compile. Off by default; each one keeps training correct."""

from __future__ import annotations

import math

import pytest
import torch

from asfp_explorer.config import ConfigError, RunConfig
from asfp_explorer.engine import EventKind, Trainer


def config(**training) -> RunConfig:
    return RunConfig().with_changes(training={"epochs": 2, "device": "cpu", **training},
                                    data={"batch_size": 64})


def run(cfg: RunConfig) -> tuple[Trainer, list]:
    snaps: list = []
    trainer = Trainer(cfg, [lambda e: snaps.append(e.data) if e.kind is EventKind.EPOCH_END else None])
    assert trainer.run() == "finished"
    return trainer, snaps


def test_defaults_are_the_papers_arithmetic():
    t = RunConfig().training
    assert (t.eval_unmasked, t.precision, t.channels_last, t.compile) == (True, "fp32", False, False)
    with pytest.raises(ConfigError, match="training.precision"):
        config(precision="fp16")
    with pytest.raises(ConfigError, match="training.compile"):
        config(compile="yes")


def test_skipping_the_unmasked_evaluation_changes_nothing_else():
    _, full = run(config())
    _, lean = run(config(eval_unmasked=False))
    assert all(s.test_acc_unmasked is None for s in lean)
    assert [s.test_acc_masked for s in lean] == [s.test_acc_masked for s in full]
    assert [s.train_loss for s in lean] == [s.train_loss for s in full]


def test_bf16_autocast_runs_convs_in_bfloat16_and_trains():
    trainer, snaps = run(config(precision="bf16"))
    x = torch.randn(2, *trainer.data.input_size)
    with trainer._autocast():
        assert trainer.model.conv1(x).dtype == torch.bfloat16
    assert trainer.model.conv1.weight.dtype == torch.float32  # master weights stay fp32
    assert all(math.isfinite(s.train_loss) for s in snaps[1:])
    assert snaps[-1].realised_ratio > 0


def test_channels_last_matches_the_default_run():
    base, plain = run(config())
    trainer, nhwc = run(config(channels_last=True))
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain[1:], nhwc[1:]):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-3)
    # Masks are computed on the same values: the pruned filters are zero in either layout.
    for name, conv in trainer.convs.items():
        pruned = ~trainer.pruning.masks[name]
        assert torch.all(conv.weight.detach()[pruned] == 0)


@pytest.mark.slow
def test_compiled_training_forward_matches_eager():
    """The compiled forward computes what the eager one does on the same weights; a whole
    epoch is not compared, since SGD amplifies fused-kernel rounding differences."""
    pytest.importorskip("torch._inductor")
    trainer = Trainer(config(epochs=1, compile=True))
    assert trainer._train_forward is not trainer.model
    x, _ = next(iter(trainer.train_loader))
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer._train_forward(x), trainer.model(x), rtol=1e-4, atol=1e-4)
    snaps: list = []
    trainer.add_observer(lambda e: snaps.append(e.data) if e.kind is EventKind.EPOCH_END else None)
    assert trainer.run() == "finished"
    assert math.isfinite(snaps[-1].train_loss)
