"""torchrun with 2 gloo processes on the CPU against one process with the same global batch.

PyTorch's SyncBatchNorm needs CUDA, and per-rank BatchNorm statistics (the default) see half
the batch, so on the CPU only a model without batch statistics can equal a one-process run:
`plain_net` below (convs, ReLU, pooling, a classifier)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from asfp_explorer.store import load_checkpoint, load_run

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
WAIT = 1200  # s: bound on a training subprocess on a busy machine


def plain_net(num_classes: int, in_channels: int) -> nn.Module:
    """No BatchNorm: its gradient is the same whether a batch is split or not."""
    return nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIN = ["train", "--model", "test_distributed:plain_net", "--dataset", "digits",
         "--epochs", "2", "--batch-size", "64", "--device", "cpu", "--quiet",
         "--method", "asfp", "--ratio", "0.4"]


def _run(argv: list[str], ranks: int) -> float:
    """Wall seconds of one training command on `ranks` processes."""
    launcher = ([sys.executable, "-m", "asfp_explorer"] if ranks == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                 "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
                 "--master_port", str(_free_port()), "-m", "asfp_explorer"])
    t0 = time.perf_counter()
    done = subprocess.run(launcher + argv, env=_env(), capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - t0


def test_two_gloo_ranks_equal_one_process_and_resume_on_one(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    t1 = _run(TRAIN + ["--out", str(single)], 1)
    t2 = _run(TRAIN + ["--out", str(double)], 2)
    a, b = load_checkpoint(single), load_checkpoint(double)
    diff = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    print(f"\nmax |weight difference| 2 ranks vs 1: {diff:.3g}; wall {t2:.1f} s (2 ranks) vs "
          f"{t1:.1f} s (1 process)")
    assert diff < 1e-4
    for name in a["pruning"]["masks"]:  # rank 0 recorded the masks every rank checked
        assert torch.equal(a["pruning"]["masks"][name], b["pruning"]["masks"][name])
    ra, rb = load_run(single), load_run(double)
    assert [m["epoch"] for m in rb.metrics] == [0, 1, 2] and rb.status == "finished"
    for ma, mb in zip(ra.metrics, rb.metrics):
        for key in ("train_loss", "train_acc", "test_acc_masked", "prune_ratio"):
            assert ma[key] == pytest.approx(mb[key], abs=1e-4), key
    # The 2-rank run continues on one process (one more epoch).
    _run(["train", "--resume", str(double), "--epochs", "3", "--quiet"], 1)
    rc = load_run(double)
    assert [m["epoch"] for m in rc.metrics] == [0, 1, 2, 3] and rc.status == "finished"


def _rank_pid(launcher_pid: int, rank: int, timeout: float) -> int:
    """The pid of the worker process with RANK=`rank` among the launcher's children."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
        threading_wait(0.2)
    raise TimeoutError(f"no worker with RANK={rank}")


def threading_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)  # a poll interval while /proc lists the workers


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_killing_one_rank_ends_the_job_with_the_checkpoint_intact(tmp_path):
    import signal

    from asfp_explorer.store.follow import RunFollower

    out = tmp_path / "run"
    argv = [a if a != "2" else "6" for a in TRAIN]  # 6 epochs: time to kill one rank
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                            "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                            "--master_port", str(_free_port()), "-m", "asfp_explorer", *argv,
                            "--out", str(out)], env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        for item in RunFollower(out).items(idle_timeout=WAIT, poll_seconds=0.1):
            if item.kind == "epoch" and item.epoch == 1:
                os.kill(_rank_pid(job.pid, 1, WAIT), signal.SIGKILL)
                break
        job.wait(WAIT)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    state = load_checkpoint(out)  # verified against its sha256
    assert 1 <= state["epoch"] < 6
    _run(["train", "--resume", str(out), "--quiet"], 1)
    run = load_run(out)
    assert [m["epoch"] for m in run.metrics] == list(range(7)) and run.status == "finished"
