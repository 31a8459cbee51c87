"""Nothing lost: kill and resume bit-identically, clean stops, divergence, locks, isolation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from asfp_explorer.config import ConfigError
from asfp_explorer.engine import RunHandle
from asfp_explorer.store import RunDirError, RunLock, load_run
from conftest import tiny_config

TRAIN = ["--model", "resnet20", "--dataset", "digits", "--method", "asfp", "--ratio", "0.4",
         "--epochs", "4", "--batch-size", "16", "--device", "cpu", "--seed", "3", "--quiet"]


def cli(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "asfp_explorer.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})


def finish(proc, timeout=600):
    """Wait for `proc`; returns (exit status, its output). Closes its pipes."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def epochs_written(run_dir):
    f = run_dir / "metrics.jsonl"
    return len(f.read_text().splitlines()) - 1 if f.exists() else -1


def wait_for_epoch(run_dir, epoch, proc, timeout=300):
    t0 = time.time()
    while epochs_written(run_dir) < epoch:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def comparable(run):
    return [{k: v for k, v in m.items() if "seconds" not in k} for m in run.metrics]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ref = cli("train", *TRAIN, "--out", "ref", cwd=tmp_path)
    rc, out = finish(ref)
    assert rc == 0, out
    victim = cli("train", *TRAIN, "--out", "victim", cwd=tmp_path)
    wait_for_epoch(tmp_path / "victim", 2, victim)
    time.sleep(0.3)  # well into epoch 3 (about a second per epoch here)
    victim.send_signal(signal.SIGKILL)
    finish(victim)
    assert epochs_written(tmp_path / "victim") < 4
    rc, out = finish(cli("train", "--resume", "victim", "--quiet", cwd=tmp_path))
    assert rc == 0, out
    a, b = load_run(tmp_path / "ref"), load_run(tmp_path / "victim")
    assert comparable(a) == comparable(b)
    for x, y in zip(a.masks, b.masks):
        assert all((p == q).all() for p, q in zip(x, y))
    sa = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    sb = torch.load(tmp_path / "victim" / "checkpoint.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    for k, v in sa["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], sb["optimizer"]["state"][k]["momentum_buffer"])
    assert b.status == "finished" and any(e["event"] == "resumed" for e in b.events)


def test_sigterm_stops_cleanly_and_stays_resumable(tmp_path):
    p = cli("train", *TRAIN, "--out", "t", cwd=tmp_path)
    wait_for_epoch(tmp_path / "t", 1, p)
    p.send_signal(signal.SIGTERM)
    assert finish(p, 120)[0] == 130
    run = load_run(tmp_path / "t")
    assert run.status == "stopped" and "resumable" in run.summary["message"]
    assert not (tmp_path / "t" / "lock").exists()
    assert finish(cli("train", "--resume", "t", "--quiet", cwd=tmp_path))[0] == 0
    assert load_run(tmp_path / "t").metrics[-1]["epoch"] == 4


def test_divergence_is_reported_and_last_good_checkpoint_kept(tmp_path):
    h = RunHandle(tiny_config(training={"lr": 1e30, "epochs": 3}), tmp_path / "d")
    assert h.run() == "diverged"
    run = load_run(tmp_path / "d")
    assert run.status == "diverged" and "epoch 1" in run.summary["message"]
    state = torch.load(tmp_path / "d" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_from_another_model_is_refused(tmp_path, finished_run_dir):
    with pytest.raises(ConfigError, match="model.name"):
        RunHandle(tiny_config(model={"name": "resnet32"}), finished_run_dir, resume=True)


def test_lock_held_by_a_live_process_refuses_and_a_dead_one_does_not(tmp_path):
    d = tmp_path / "l"
    d.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (d / "lock").write_text(str(sleeper.pid))
        with pytest.raises(RunDirError, match=f"process {sleeper.pid}"):
            RunHandle(tiny_config(), d, overwrite=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    RunLock(d).acquire()  # the dead process's lock is taken over
    RunLock(d).release()


def test_two_handles_on_one_folder_in_one_process_are_refused(tmp_path):
    first = RunHandle(tiny_config(), tmp_path / "same")
    with pytest.raises(RunDirError, match="another run of this process"):
        RunHandle(tiny_config(), tmp_path / "same", overwrite=True)
    first.run()


def test_two_concurrent_runs_do_not_mix(tmp_path):
    cfg_a = tiny_config(pruning={"method": "sfp"}, training={"seed": 1})
    cfg_b = tiny_config(pruning={"method": "hard-asfp"}, training={"seed": 2})
    RunHandle(cfg_a, tmp_path / "a_seq").run()
    RunHandle(cfg_b, tmp_path / "b_seq").run()
    ha = RunHandle(cfg_a, tmp_path / "a_par").start()
    hb = RunHandle(cfg_b, tmp_path / "b_par").start()
    assert ha.wait(300) == "finished" and hb.wait(300) == "finished"
    for name in ("a", "b"):
        seq, par = load_run(tmp_path / f"{name}_seq"), load_run(tmp_path / f"{name}_par")
        assert comparable(seq) == comparable(par)


def test_tracing_while_another_run_trains_changes_neither(tmp_path):
    """fx tracing patches Module.__call__ process-wide; the trace lock keeps runs out of it."""
    from asfp_explorer.flops import MacCounter
    from asfp_explorer.models import build_model

    cfg = tiny_config(training={"seed": 5, "epochs": 4})
    RunHandle(cfg, tmp_path / "alone").run()
    handle = RunHandle(cfg, tmp_path / "beside_traces").start()
    model = build_model("resnet20", 10, 1)
    counts = set()
    while handle.status in ("created", "running"):
        counts.add(MacCounter(model, (1, 8, 8)).dense_macs)
    assert handle.wait(300) == "finished"
    assert len(counts) == 1
    assert comparable(load_run(tmp_path / "alone")) == comparable(load_run(tmp_path / "beside_traces"))


def test_trace_lock_waits_for_running_models_and_refuses_to_deadlock():
    from asfp_explorer.models.trace_lock import running_models, tracing

    order = []
    inside = threading.Event()
    release = threading.Event()

    def train():
        with running_models():
            inside.set()
            release.wait(5)
            order.append("trained")

    t = threading.Thread(target=train)
    t.start()
    inside.wait(5)
    threading.Timer(0.2, release.set).start()
    with tracing():
        order.append("traced")
    t.join()
    assert order == ["trained", "traced"]
    with running_models(), pytest.raises(RuntimeError, match="deadlock"):
        with tracing():
            pass
