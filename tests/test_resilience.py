"""Nothing lost: kill and resume bit-identically, clean stops at any point, a failing recorder,
resume with changes, one-line errors for bad input, divergence, locks, isolation.

(Damaged run directories, checksums, the lock itself: test_store_integrity.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from asfp_explorer.config import ConfigError
from asfp_explorer.engine import RunHandle
from asfp_explorer.store import RunDirError, load_run
from support import tiny_config

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


# ------------------------------------------------------------------ failures and stops

# The CLI flags that give tiny_config() (the config of the shared finished_run_dir).
TINY = ["--model", "resnet20", "--dataset", "digits", "--epochs", "3", "--batch-size", "64",
        "--device", "cpu", "--quiet"]


def main_lines(capsys, *argv, stdout=False):
    """Run the CLI in this process; returns (exit status, stderr lines[, stdout])."""
    from asfp_explorer.cli import main

    rc = main(list(argv))
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    return (rc, err, captured.out) if stdout else (rc, err)


def test_a_failing_recorder_ends_the_run_as_failed_and_resume_completes_it(
        tmp_path, monkeypatch, capsys, finished_run_dir):
    from asfp_explorer.store import files

    real = files.atomic_savez

    def disk_full_at_epoch_2(path, **arrays):
        if path.name == "000002.npz":
            raise OSError(28, "No space left on device")
        return real(path, **arrays)

    monkeypatch.setattr(files, "atomic_savez", disk_full_at_epoch_2)
    out = tmp_path / "r"
    rc, err = main_lines(capsys, "train", *TINY, "--out", str(out))
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith("failed: OSError") and "checkpoint of epoch 1 is kept" in err[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["message"]
    assert summary["epochs_done"] == 1  # epoch 2 was not recorded, so it is not counted
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "lock").exists()

    monkeypatch.undo()
    rc, err = main_lines(capsys, "train", "--resume", str(out), "--quiet")
    assert rc == 0, err
    resumed, reference = load_run(out), load_run(finished_run_dir)
    assert comparable(resumed) == comparable(reference)
    assert resumed.status == "finished"


def test_a_watching_observer_that_raises_is_detached_and_the_run_goes_on(tmp_path):
    def broken(event):
        raise RuntimeError("dashboard gone")

    handle = RunHandle(tiny_config(training={"epochs": 1}), tmp_path / "w", [broken])
    with pytest.warns(RuntimeWarning, match="dashboard gone"):
        assert handle.run() == "finished"


HOLD = """
import pathlib, signal, sys
import asfp_explorer.engine.trainer as trainer
from asfp_explorer.cli import main

marker, point = pathlib.Path(sys.argv[1]), sys.argv[2]

def hold(*args, **kwargs):
    marker.touch()  # the test waits for this file, then signals
    signal.pause()

if point == "start-up":
    trainer.Trainer.__init__ = hold
else:
    trainer.Trainer._initial_masks = hold
sys.exit(main(sys.argv[3:]))
"""


def held_cli(tmp_path, point, *argv):
    marker = tmp_path / f"at-{point}"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(marker), point, *argv],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONWARNINGS": "ignore",
                                            "OMP_NUM_THREADS": "2"})
    while not marker.exists():  # wait on the file the process writes at that point
        assert proc.poll() is None, proc.communicate()
        os.sched_yield()
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_cleanly(tmp_path, sig):
    proc = held_cli(tmp_path, "start-up", "train", *TINY, "--out", "s")
    proc.send_signal(sig)
    rc, out = finish(proc, 120)
    assert rc == 130, out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1
    assert "run the same command again" in out
    assert not (tmp_path / "s" / "lock").exists()
    # Nothing was recorded: --resume says what to do instead of failing obscurely.
    rc, out = finish(cli("train", "--resume", "s", "--quiet", cwd=tmp_path), 120)
    assert rc == 2 and "--overwrite" in out and len(out.strip().splitlines()) == 1


def test_sigterm_before_the_first_checkpoint_is_restartable_with_resume(tmp_path,
                                                                        finished_run_dir):
    proc = held_cli(tmp_path, "epoch-0", "train", *TINY, "--out", "e")
    proc.send_signal(signal.SIGTERM)
    rc, out = finish(proc, 120)
    assert rc == 130 and "Traceback" not in out, out
    assert not (tmp_path / "e" / "checkpoint.pt").exists()
    proc = cli("train", "--resume", "e", "--quiet", cwd=tmp_path)
    rc, out = finish(proc)
    assert rc == 0 and "starting it again" in out, out
    assert comparable(load_run(tmp_path / "e")) == comparable(load_run(finished_run_dir))


# ------------------------------------------------------------------ resume with changes

def test_resume_applies_changeable_flags_as_a_recorded_change(tmp_path, finished_run_dir,
                                                              capsys):
    import shutil

    d = tmp_path / "c"
    shutil.copytree(finished_run_dir, d)
    events = (d / "events.jsonl").read_bytes()
    (d / "events.jsonl").write_bytes(events[:-7])  # a torn last line: a crash mid-append
    rc, err = main_lines(capsys, "train", "--resume", str(d), "--quiet", "--epochs", "4",
                         "--lr", "0.01", "--method", "sfp")
    assert rc == 0, err
    run = load_run(d)  # the torn line was cut before appending: everything reads
    assert [m["epoch"] for m in run.metrics] == [0, 1, 2, 3, 4]
    assert run.changes == [{"epoch": 3, "changes": {"training": {"epochs": 4, "lr": 0.01},
                                                    "pruning": {"method": "sfp"}}}]
    # lr is the base rate: epoch 4 of 4 trains after all three milestone decays (x 0.2 each)
    assert run.metrics[4]["lr"] == pytest.approx(0.01 * 0.2 ** 3)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["config"]["pruning"]["method"] == "sfp"
    assert summary["changes"] == run.changes

    # A later resume restores the checkpoint's (changed) config: show names the current one.
    rc, err = main_lines(capsys, "train", "--resume", str(d), "--quiet", "--epochs", "5")
    assert rc == 0, err
    rc, _, out = main_lines(capsys, "show", str(d), "--json", stdout=True)
    assert rc == 0 and json.loads(out)["method"] == "sfp"


def test_resume_refuses_flags_that_fix_the_run(finished_run_dir, capsys):
    rc, err = main_lines(capsys, "train", "--resume", str(finished_run_dir), "--seed", "4")
    assert rc == 2 and len(err) == 1 and "--seed cannot change" in err[0]


# ------------------------------------------------------------------ one-line errors

@pytest.mark.parametrize("argv,match", [
    (("schedule", "--epochs", "2147483648"), "at most 100,000"),
    (("flops", "--input-size", "2147483648"), "expected 8 to 4096 pixels"),
    (("train", "--epochs", "2147483648", "--quiet"), "at most 100,000"),
    (("show", "n" * 256), "256 bytes long"),
    (("export", "n" * 256), "256 bytes long"),
])
def test_huge_or_impossible_input_is_one_line(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = main_lines(capsys, *argv)
    assert rc == 2 and len(err) == 1 and match in err[0], err


def test_show_and_export_of_damaged_runs_are_one_line(tmp_path, finished_run_dir, capsys):
    import shutil

    d = tmp_path / "x"
    shutil.copytree(finished_run_dir, d)
    (d / "run_start.json").unlink()
    rc, err = main_lines(capsys, "export", str(d))
    assert rc == 2 and len(err) == 1 and "run_start.json: missing" in err[0], err
    (d / "run_start.json").write_text("[]")
    rc, err = main_lines(capsys, "show", str(d))
    assert rc == 2 and len(err) == 1 and "run_start.json: holds a JSON list" in err[0], err


def test_report_never_replaces_something_that_is_not_a_regular_file(tmp_path,
                                                                     finished_run_dir, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # stands in for a device node such as /dev/null
    rc, err = main_lines(capsys, "report", str(finished_run_dir), "--html", str(fifo))
    assert rc == 2 and len(err) == 1 and "not a regular file" in err[0], err
    assert fifo.is_fifo()


def test_divergence_is_said_once(tmp_path, capsys):
    rc, err = main_lines(capsys, "train", *TINY[:-3], "--epochs", "2", "--lr", "1e30",
                         "--quiet", "--out", str(tmp_path / "d"))
    assert rc == 3 and len(err) == 1, err
    assert err[0].startswith("diverged: ") and "diverged: diverged" not in err[0]


def _npz(path, **overrides):
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
              "y_train": np.arange(40) % 4,
              "x_test": rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8),
              "y_test": np.arange(12) % 4}
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def _truncated(path, size):
    path.write_bytes(path.read_bytes()[:size])  # a download or copy cut off
    return path


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b"") or p, "not a readable .npz archive"),
    (lambda p: _truncated(_npz(p), 300), "not a readable .npz archive"),
    (lambda p: __import__("numpy").save(p.with_suffix(".npy"), [1, 2]) or
     p.with_suffix(".npy"), "single array (.npy)"),
    (lambda p: _npz(p, x_train=__import__("numpy").zeros((40, 8, 8, 0), "uint8"),
                    x_test=__import__("numpy").zeros((12, 8, 8, 0), "uint8")), "channel axis"),
    (lambda p: _npz(p, x_train=__import__("numpy").zeros((40, 0, 0), "uint8"),
                    x_test=__import__("numpy").zeros((12, 0, 0), "uint8")), "0x0 pixels"),
    (lambda p: _npz(p, x_train=__import__("numpy").zeros((40, 1, 1, 3), "uint8"),
                    x_test=__import__("numpy").zeros((12, 1, 1, 3), "uint8")), "1x1 pixels"),
    (lambda p: _npz(p, x_train=__import__("numpy").zeros((40, 4, 4, 4), "uint8"),
                    x_test=__import__("numpy").zeros((12, 4, 4, 4), "uint8")), "could be"),
    (lambda p: _npz(p, y_test=__import__("numpy").array([10 ** 8] * 12)), "label 100000000"),
    (lambda p: _npz(p, y_test=__import__("numpy").array([2 ** 40] * 12)), "label 1099511627776"),
])
def test_bad_npz_data_sets_are_one_line(tmp_path, make, match):
    from asfp_explorer.data import DataError, load_npz

    path = make(tmp_path / "d.npz")
    with pytest.raises(DataError, match=match.replace("(", r"\(").replace(")", r"\)")) as e:
        load_npz(path)
    assert "\n" not in str(e.value)


def test_channels_first_images_are_recognised(tmp_path):
    import numpy as np

    from asfp_explorer.data import load_npz

    hwc = load_npz(_npz(tmp_path / "hwc.npz"))
    chw = load_npz(_npz(tmp_path / "chw.npz",
                        x_train=np.load(tmp_path / "hwc.npz")["x_train"].transpose(0, 3, 1, 2),
                        x_test=np.load(tmp_path / "hwc.npz")["x_test"].transpose(0, 3, 1, 2)))
    assert hwc.input_size == chw.input_size == (3, 8, 8)
    assert torch.equal(hwc.x_train, chw.x_train) and torch.equal(hwc.x_test, chw.x_test)
