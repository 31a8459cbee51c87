"""Following a run directory that another process writes: `RunFollower`, `show --follow`,
`Dashboard.follow`. The writers are real `asfp-explorer train` subprocesses; the tests wait
on what the follower yields (bounded by timeouts), never on sleeps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asfp_explorer.store import load_run
from asfp_explorer.store.follow import RunFollower

WAIT = 300  # s: bound on any wait for a writer on a busy machine


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "asfp_explorer.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(out: Path, epochs: int) -> subprocess.Popen:
    return subprocess.Popen(_cli("train", "--dataset", "digits", "--epochs", str(epochs),
                                 "--batch-size", "64", "--device", "cpu", "--quiet",
                                 "--out", str(out)),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _same_record(followed, stored) -> None:
    """The follower's record equals the directory read at rest (metrics, norms, masks)."""
    assert followed.metrics == stored.metrics
    assert followed.layer_names == stored.layer_names
    for a, b in zip(followed.norms, stored.norms):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    for a, b in zip(followed.masks, stored.masks):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------ without a writer

@pytest.fixture(scope="module")
def finished_run_dir(tmp_path_factory) -> Path:
    """A finished 3-epoch run, trained on one thread (two spin on a busy machine)."""
    from asfp_explorer.engine import RunHandle
    from support import one_thread, tiny_config

    out = tmp_path_factory.mktemp("follow") / "run"
    with one_thread():
        assert RunHandle(tiny_config(), out).run() == "finished"
    return out


def _copy_head(src: Path, dst: Path) -> None:
    dst.mkdir()
    (dst / "layers").mkdir()
    for name in ("environment.json", "run_start.json", "config.json"):
        shutil.copy(src / name, dst / name)
    for f in (src / "layers").iterdir():
        shutil.copy(f, dst / "layers" / f.name)


def test_torn_lines_wait_for_their_newline_and_a_rewrite_rewinds(finished_run_dir, tmp_path):
    src = finished_run_dir
    lines = (src / "metrics.jsonl").read_text().splitlines(keepends=True)
    run = tmp_path / "run"
    _copy_head(src, run)
    follower = RunFollower(run)
    assert [i.kind for i in follower.poll()] == ["started"]
    metrics = run / "metrics.jsonl"
    metrics.write_text(lines[0] + lines[1][:17])  # epoch 1 half written
    assert [(i.kind, i.epoch) for i in follower.poll()] == [("epoch", 0)]
    assert follower.poll() == []  # the torn line is not read while it is torn
    with open(metrics, "a") as f:
        f.write(lines[1][17:] + lines[2])
    assert [(i.kind, i.epoch) for i in follower.poll()] == [("epoch", 1), ("epoch", 2)]
    # A resume replaces the file (another inode) without the epochs after its checkpoint.
    tmp = run / ".m.tmp"
    tmp.write_text(lines[0] + lines[1])
    os.replace(tmp, metrics)
    assert [(i.kind, i.epoch) for i in follower.poll()] == [("rewound", 1)]
    assert [m["epoch"] for m in follower.run.metrics] == [0, 1]
    with open(metrics, "a") as f:
        f.write("".join(lines[2:]))
    shutil.copy(src / "events.jsonl", run / "events.jsonl")
    got = follower.poll()
    assert [(i.kind, i.epoch) for i in got] == [("epoch", 2), ("epoch", 3), ("ended", 3)]
    assert got[-1].status == "finished" and follower.ended
    _same_record(follower.run, load_run(src))


def test_a_cleared_folder_is_a_restart(finished_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run_dir, run)
    follower = RunFollower(run)
    assert [i.kind for i in follower.poll()][-1] == "ended"
    for name in ("config.json", "metrics.jsonl", "events.jsonl"):
        (run / name).unlink()
    assert [i.kind for i in follower.poll()] == ["restarted"]
    assert follower.run.metrics == [] and not follower.started


# ------------------------------------------------------------------ with a writer process

def test_terminal_notebook_and_follower_see_a_run_as_it_is_written(tmp_path):
    """A writer subprocess trains; meanwhile `show --follow` (a second subprocess), a
    following dashboard and a RunFollower in this process watch the same folder."""
    from asfp_explorer.viz import Dashboard
    from asfp_explorer.viz.figures import dashboard_figure

    out = tmp_path / "run"
    follower = RunFollower(out)
    assert follower.poll() == []  # nothing there yet
    show = subprocess.Popen(_cli("show", str(out), "--follow", "--timeout", str(WAIT)),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    writer = _train(out, 3)
    try:
        dash = Dashboard.follow(out, poll_seconds=0.1, start_timeout=WAIT)
        items = list(follower.items(idle_timeout=WAIT, poll_seconds=0.05))
        assert writer.wait(WAIT) == 0
        show_out, show_err = show.communicate(timeout=WAIT)
        assert dash.run_ended.wait(WAIT)
    finally:
        for p in (writer, show):
            if p.poll() is None:
                p.kill()
    stored = load_run(out)
    kinds = [(i.kind, i.epoch) for i in items]
    assert kinds == [("started", 0), ("epoch", 0), ("epoch", 1), ("epoch", 2), ("epoch", 3),
                     ("ended", 3)]
    assert items[-1].status == "finished"
    _same_record(follower.run, stored)
    # The terminal: one line per epoch, then how the run ended; exit status 0.
    assert show.returncode == 0, show_err
    lines = show_out.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ")] == ["0/3", "1/3", "2/3",
                                                                         "3/3"]
    assert lines[-1] == "run finished: finished 3 epochs"
    # The notebook: the same figures as a replay of the finished folder.
    with dash.lock:
        live = json.loads(dash.figure.to_json())["data"]
    stored_fig, _ = dashboard_figure(stored)
    assert live == json.loads(stored_fig.to_json())["data"]
    assert "run finished: finished 3 epochs" in dash.controls.message.value
    dash.close()
    dash.follow_thread.join(WAIT)
    assert not dash.follow_thread.is_alive()


@pytest.mark.slow
def test_following_survives_a_killed_writer_and_its_resume(tmp_path):
    out = tmp_path / "run"
    writer = _train(out, 4)
    follower = RunFollower(out)
    seen = []
    resumer = None
    try:
        for item in follower.items(idle_timeout=WAIT, poll_seconds=0.05):
            seen.append((item.kind, item.epoch))
            if item.kind == "epoch" and item.epoch == 1 and writer.poll() is None:
                writer.send_signal(signal.SIGKILL)
                writer.wait(WAIT)  # reaped: a zombie would still count as a live writer
            if item.kind == "interrupted":
                assert resumer is None and item.epoch >= 1
                resumer = subprocess.Popen(_cli("train", "--resume", str(out), "--quiet"),
                                           env=_env(), stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
        assert resumer is not None and resumer.wait(WAIT) == 0
    finally:
        for p in (writer, resumer):
            if p is not None and p.poll() is None:
                p.kill()
    kinds = [k for k, _ in seen]
    assert kinds.index("interrupted") < kinds.index("resumed") < len(kinds) - 1
    assert seen[-1] == ("ended", 4)
    stored = load_run(out)
    assert [m["epoch"] for m in stored.metrics] == [0, 1, 2, 3, 4]
    _same_record(follower.run, stored)
    assert follower.run.status == "finished"


def test_compare_accepts_a_run_still_being_written(finished_run_dir, tmp_path, capsys):
    """A run mid-epoch: the writer holds the lock, the summary says running and the last
    metrics line is half written; compare reads the complete epochs beside a finished run."""
    from asfp_explorer.cli import main
    from asfp_explorer.store import RunLock

    run = tmp_path / "running"
    shutil.copytree(finished_run_dir, run)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:2]) + lines[2][:30])
    (run / "events.jsonl").write_text("")
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    lock = RunLock(run)
    lock.acquire()  # this process plays the writer
    try:
        with pytest.warns(RuntimeWarning, match="incomplete"):
            assert main(["compare", str(finished_run_dir), str(run)]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert "running" in out and "finished" in out
