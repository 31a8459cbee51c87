"""Run directories: live record == loaded record; atomic files; damaged tails."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from asfp_explorer.engine import RunHandle
from asfp_explorer.store import RunDirError, load_checkpoint, load_run
from support import tiny_config


def test_round_trip_live_equals_loaded(tmp_path):
    handle = RunHandle(tiny_config(), tmp_path / "r")
    handle.run()
    live = handle.recorder.run
    loaded = load_run(tmp_path / "r")
    assert loaded.config == live.config  # both in JSON form
    assert loaded.info == json.loads(json.dumps(live.info))
    assert loaded.metrics == json.loads(json.dumps(live.metrics))
    assert loaded.summary == json.loads(json.dumps(live.summary))
    assert loaded.events == json.loads(json.dumps(live.events))
    for a, b in zip(loaded.norms, live.norms):
        assert all(np.allclose(x, y) for x, y in zip(a, b))
    for a, b in zip(loaded.masks, live.masks):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert loaded.status == "finished"
    assert [m["epoch"] for m in loaded.metrics] == [0, 1, 2, 3]


def test_metrics_have_the_promised_fields(finished_run_dir):
    run = load_run(finished_run_dir)
    required = {"epoch", "train_loss", "train_acc", "test_acc_unmasked", "test_acc_masked",
                "prune_ratio", "pruned", "revived", "exact_macs", "exact_params", "paper_macs",
                "epoch_seconds"}
    for m in run.metrics:
        assert required <= set(m)
        assert set(m["pruned"]) == set(run.layer_names)
    env = json.loads((finished_run_dir / "environment.json").read_text())
    assert {"torch", "python", "device", "seed", "git_revision"} <= set(env)
    assert run.info["fvcore_dense_macs"] > 0 and run.info["dense_macs"] > 0


def test_checkpoint_loads_with_weights_only(finished_run_dir):
    state = torch.load(finished_run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3
    assert set(state["pruning"]["masks"]) == set(load_run(finished_run_dir).layer_names)


def test_cut_off_last_line_loads_complete_epochs_and_warns_once(tmp_path, finished_run_dir):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(finished_run_dir, d)
    text = (d / "metrics.jsonl").read_text()
    (d / "metrics.jsonl").write_text(text[: -40])  # a crash in the middle of the last line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(d)
    assert [m["epoch"] for m in run.metrics] == [0, 1, 2]
    assert len([w for w in caught if "incomplete" in str(w.message)]) == 1


def test_existing_run_dir_is_refused_and_kept(finished_run_dir):
    before = (finished_run_dir / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        RunHandle(tiny_config(), finished_run_dir)
    assert (finished_run_dir / "metrics.jsonl").read_text() == before


def test_truncated_checkpoint_gives_clear_error(tmp_path, finished_run_dir):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(finished_run_dir, d)
    data = (d / "checkpoint.pt").read_bytes()
    (d / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="changed or damaged"):
        load_checkpoint(d)


def test_not_a_run_dir(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory"):
        load_run(tmp_path)
