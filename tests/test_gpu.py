"""GPU-only checks (skipped without CUDA): no host syncs in the hot loop, device data."""

from __future__ import annotations

import pytest
import torch

from asfp_explorer.engine import Trainer
from support import requires_gpu, tiny_config

pytestmark = pytest.mark.gpu  # benchmarks/gpu_checks.sh selects these with -m gpu


@requires_gpu
@pytest.mark.parametrize("method", ["asfp", "hard-asfp"])
def test_iterations_and_mask_update_make_no_host_sync(method):
    t = Trainer(tiny_config(training={"device": "cuda"}, pruning={"method": method}))
    t.pruning.update_masks(0)
    t._iterations()  # warm-up: lazy CUDA initialisation may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        t._iterations()
        t._evaluate()
        t.pruning.update_masks(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@requires_gpu
def test_data_lives_on_the_gpu_and_a_run_finishes():
    t = Trainer(tiny_config(training={"device": "cuda", "epochs": 2}))
    assert t.data.x_train.is_cuda and t.train_loader.generator.device.type == "cuda"
    assert t.run() == "finished"


@requires_gpu
def test_fast_path_bf16_channels_last_makes_no_host_sync_and_trains():
    cfg = tiny_config(training={"device": "cuda", "epochs": 2, "precision": "bf16",
                                "channels_last": True})
    t = Trainer(cfg)
    t.pruning.update_masks(0)
    t._iterations()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        t._iterations()
        t._evaluate()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert Trainer(cfg).run() == "finished"


@requires_gpu
def test_compiled_training_on_the_gpu_finishes():
    assert Trainer(tiny_config(training={"device": "cuda", "epochs": 1, "compile": True})).run() == "finished"
