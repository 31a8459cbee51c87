"""Training in a child process (`ProcessRunHandle`, the dashboard's default worker): the same
run as a thread computes, steered the same way, and ends cleanly when either side dies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from asfp_explorer.config import ConfigError
from asfp_explorer.engine import ProcessRunHandle, RunHandle
from asfp_explorer.engine.events import EventKind
from asfp_explorer.models import build_model, register_model
from asfp_explorer.store import load_run
from asfp_explorer.viz.dashboard import Dashboard
from support import one_thread
from support import tiny_config as config


@pytest.fixture(autouse=True)
def _torch_one_thread():
    with one_thread():  # the child takes the parent's thread count
        yield


def _without_times(metrics):
    return [{k: v for k, v in m.items() if "seconds" not in k} for m in metrics]


def _announced_epoch(message: str) -> int:
    m = re.search(r"applies from epoch (\d+)", message)
    assert m, message
    return int(m.group(1))


def test_a_child_process_computes_exactly_what_a_thread_computes(tmp_path):
    runs = {}
    for worker in ("process", "thread"):
        dash = Dashboard(config(pruning={"method": "asfp"}), tmp_path / worker, refresh_hz=0,
                         fvcore=False, worker=worker)
        handle = dash.start()
        assert type(handle) is (ProcessRunHandle if worker == "process" else RunHandle)
        assert dash.wait() == "finished"
        runs[worker] = dash
    p, t = runs["process"], runs["thread"]
    assert _without_times(p.run.metrics) == _without_times(t.run.metrics)
    assert [len(m["pruned"]) for m in p.run.metrics] == [19] * 4
    assert p.run.info["device"] == t.run.info["device"] == "cpu"
    # The model it hands over for export is the trained one, bit for bit.
    pm, tm = p.trained_model(), t.trained_model()
    assert pm.input_size == tm.input_size and pm.device == "cpu"
    for (name, a), b in zip(pm.model.state_dict().items(), tm.model.state_dict().values()):
        assert torch.equal(a, b.cpu()), name
    assert all(torch.equal(pm.masks[n].cpu(), tm.masks[n].cpu()) for n in tm.masks)
    # ... and the child's records are the same files a thread writes.
    assert _without_times(load_run(tmp_path / "process").metrics) == \
        _without_times(load_run(tmp_path / "thread").metrics)


def test_a_change_while_paused_in_the_child_applies_from_the_epoch_it_announces(tmp_path):
    dash = Dashboard(config(training={"epochs": 6}, pruning={"method": "sfp"}),
                     tmp_path / "run", refresh_hz=0, fvcore=False)
    handle = dash.start()
    dash.pause()
    assert handle.status == "paused"
    assert handle.held.wait(120)
    dash.refresh()
    assert "paused after epoch" in dash.controls.message.value
    done = handle.epoch
    assert done < 6
    dash.controls.set_value("prune_ratio", 0.2)  # what a slider release does
    announced = _announced_epoch(dash.controls.message.value)
    assert announced == done + 1
    assert handle.config.pruning.prune_ratio == 0.2  # queued changes included
    dash.resume()
    assert dash.wait() == "finished"
    first = min(m["epoch"] for m in dash.run.metrics if m["prune_ratio"] == 0.2)
    assert first == announced
    assert load_run(tmp_path / "run").events[0]["changes"] == {"pruning": {"prune_ratio": 0.2}}


def test_a_refused_change_is_the_same_one_line_error(tmp_path):
    handle = ProcessRunHandle(config(training={"epochs": 4}), tmp_path / "run")
    with pytest.raises(RuntimeError, match="start the run first"):
        handle.queue_change(training={"epochs": 5})
    handle.start()
    handle.pause()
    assert handle.held.wait(120)
    with pytest.raises(ConfigError, match="epochs"):
        handle.queue_change(training={"epochs": 0})
    handle.stop()
    assert handle.wait(120) == "stopped"
    assert handle.trained_model().masks  # a stopped run exports too


def test_a_run_the_child_refuses_to_build_raises_in_the_caller(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(Exception) as caught:
        ProcessRunHandle(config(data={"name": "npz", "path": str(missing)}))
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)


def test_a_killed_training_process_ends_the_run_as_failed(tmp_path):
    dash = Dashboard(config(training={"epochs": 200}), tmp_path / "run", refresh_hz=0,
                     fvcore=False)
    handle = dash.start()
    handle.pause()
    assert handle.held.wait(120)
    os.kill(handle.pid, 9)
    assert handle.wait(60) == "failed"
    dash.refresh()
    message = dash.controls.message.value
    assert "exit code -9" in message and "resumable" in message
    assert dash.run.status == "failed" and not dash.steering.live()
    assert not dash.controls.start.disabled  # a new run can start
    # The folder holds what the child recorded and resumes.
    resumed = RunHandle(run_dir=tmp_path / "run", resume=True)
    assert resumed.epoch == handle.epoch
    resumed._release()


def test_the_child_stops_when_its_parent_dies(tmp_path):
    """An orphaned child never trains on: the closed pipe stops it at the next boundary."""
    script = textwrap.dedent(f"""
        import os, sys, time
        import torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from support import tiny_config
        from asfp_explorer.engine import ProcessRunHandle

        if __name__ == "__main__":
            torch.set_num_threads(1)
            h = ProcessRunHandle(tiny_config(training={{"epochs": 500}}), {str(tmp_path / "run")!r})
            h.start()
            while h.epoch < 1:
                time.sleep(0.05)
            print(h.pid, flush=True)
            os._exit(0)  # no clean-up at all, as a killed kernel
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    child = int(out.stdout.split()[-1])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child)
    run = load_run(tmp_path / "run")
    assert run.status == "stopped" and 1 <= run.metrics[-1]["epoch"] < 500


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not reaped) has ended
        return f.read().split(")")[-1].split()[0] != "Z"


def test_the_worker_is_chosen_and_checked(tmp_path):
    assert Dashboard(config(), fvcore=False).worker == "process"
    assert Dashboard(config(), fvcore=False, model=build_model("resnet20", 10, 1)).worker == "thread"
    register_model("tiny-registered-here", lambda n, c: build_model("resnet20", n, c))
    assert Dashboard(config(model={"name": "tiny-registered-here"}),
                     fvcore=False).worker == "thread"
    with pytest.raises(ValueError, match="worker: 'gpu' is not allowed; allowed: process, "
                                         "thread"):
        Dashboard(config(), worker="gpu")
    with pytest.raises(ValueError, match="use 'thread'"):
        Dashboard(config(), worker="process", model=build_model("resnet20", 10, 1))


def test_observers_in_the_parent_see_every_event_in_order(tmp_path):
    seen = []
    handle = ProcessRunHandle(config(), observers=[lambda e: seen.append((e.kind, e.epoch))])
    handle.add_observer(lambda e: 1 / 0)  # a broken watcher is detached, the run goes on
    assert handle.run() == "finished"
    kinds = [k for k, _ in seen]
    assert kinds[0] is EventKind.RUN_START and kinds[-1] is EventKind.RUN_END
    assert [e for k, e in seen if k is EventKind.EPOCH_END] == [0, 1, 2, 3]
    assert handle.observer_errors and "ZeroDivisionError" in handle.observer_errors[0]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads the child's /proc environ")
@pytest.mark.parametrize("own", [None, "12345"])
def test_the_child_spins_briefly_unless_told_otherwise(monkeypatch, own):
    """libgomp's default spin made two busy processes on 2 cores crawl (docs/benchmarks.md):
    the child gets CHILD_SPIN_COUNT, a user's own GOMP_SPINCOUNT is kept, and this process's
    environment is left as it was."""
    from asfp_explorer.engine.process_runner import CHILD_SPIN_COUNT

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if own is None:
        monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    else:
        monkeypatch.setenv("GOMP_SPINCOUNT", own)
    handle = ProcessRunHandle(config())
    try:
        with open(f"/proc/{handle.pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    finally:
        handle.close()
    assert env[b"GOMP_SPINCOUNT"] == (own or CHILD_SPIN_COUNT).encode()
    assert os.environ.get("GOMP_SPINCOUNT") == own
