"""Run directories under damage: checksums, strict reading, torn tails, the lock, --overwrite.

Each damage is done to a copy of one finished run; the tests check that it is refused with
one line naming the file, and that a refusal changes nothing on disk.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
import warnings

import numpy as np
import pytest
import torch

from asfp_explorer.config import ConfigError
from asfp_explorer.engine import RunHandle
from asfp_explorer.store import (
    RunDirError,
    RunLock,
    atomic_torch_save,
    atomic_write_bytes,
    cut_torn_tail,
    load_checkpoint,
    load_run,
    read_verified,
)
from support import tiny_config


@pytest.fixture
def run_copy(tmp_path, finished_run_dir):
    d = tmp_path / "run"
    shutil.copytree(finished_run_dir, d)
    return d


def snapshot(d):
    """Every file below `d` with its bytes (to prove a refusal touched nothing)."""
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ checksums

def test_checksum_survives_a_crash_between_rename_and_narrowing(tmp_path, monkeypatch):
    """Old file + both hashes, and new file + both hashes, each verify; a changed one not."""
    from asfp_explorer.store import checksums

    f = tmp_path / "x.bin"
    atomic_write_bytes(f, b"old", checksum=True)
    assert read_verified(f) == b"old"

    def crash(path, digest):
        raise KeyboardInterrupt  # killed after the rename, before the checksum is narrowed

    monkeypatch.setattr("asfp_explorer.store.files.write_checksum_after", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(f, b"new", checksum=True)
    assert read_verified(f) == b"new"
    assert sorted(checksums.checksum_path(f).read_text().split()) == sorted(
        [checksums.sha256(b"new"), checksums.sha256(b"old")])
    f.write_bytes(b"neu")
    with pytest.raises(RunDirError, match="changed or damaged"):
        read_verified(f)


def test_flipped_byte_in_checkpoint_tensor_data_is_refused(run_copy):
    f = run_copy / "checkpoint.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the tensor data: torch would load altered weights
    f.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="checkpoint.pt: its sha256 does not match") as e:
        load_checkpoint(run_copy)
    one_line(e)


def test_zero_byte_checkpoint_is_one_line(run_copy):
    (run_copy / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(RunDirError, match=r"empty \(0 bytes\)") as e:
        load_checkpoint(run_copy)
    one_line(e)


@pytest.mark.parametrize("state,match", [
    ([1, 2, 3], "holds a list"),
    ({"epoch": 1}, "lacks 'config'"),
    ("drop:model", "lacks 'model'"),
    ("epoch:str", "'epoch' is a str"),
])
def test_checkpoint_of_the_wrong_structure_is_one_line(run_copy, state, match):
    good = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    if state == "drop:model":
        state = {k: v for k, v in good.items() if k != "model"}
    elif state == "epoch:str":
        state = {**good, "epoch": "3"}
    atomic_torch_save(state, run_copy / "checkpoint.pt")  # a valid checksum: structure decides
    with pytest.raises(RunDirError, match=match) as e:
        load_checkpoint(run_copy)
    one_line(e)


def test_checkpoint_shapes_and_epoch_are_checked_against_the_model(run_copy):
    good = torch.load(run_copy / "checkpoint.pt", weights_only=True)
    atomic_torch_save({**good, "epoch": 99}, run_copy / "checkpoint.pt")
    with pytest.raises(RunDirError, match="epoch 99"):
        RunHandle(None, run_copy, resume=True)
    key = next(k for k in good["model"] if k.endswith("conv1.weight"))
    model = dict(good["model"])
    model[key] = model[key][:1]
    atomic_torch_save({**good, "model": model}, run_copy / "checkpoint.pt")
    with pytest.raises(RunDirError, match=f"{key!r} has shape"):
        RunHandle(None, run_copy, resume=True)
    assert not (run_copy / "lock").exists()


# ------------------------------------------------------------------ strict reading

def _write(path, text):
    path.write_text(text)


@pytest.mark.parametrize("damage,match", [
    (lambda d: _write(d / "config.json", "{}"), "config.json: lacks the section"),
    (lambda d: _write(d / "config.json", "[]"), "config.json: holds a JSON list"),
    (lambda d: _write(d / "summary.json", "[1]"), "summary.json: holds a JSON list"),
    (lambda d: _write(d / "run_start.json", "{garbled"), "run_start.json: not valid JSON"),
    (lambda d: (d / "run_start.json").unlink(), "run_start.json: missing"),
    (lambda d: (d / "environment.json").unlink(), "environment.json: missing"),
    (lambda d: _write(d / "metrics.jsonl", "[1, 2]\n"), "line 1 is a JSON list"),
    (lambda d: _write(d / "metrics.jsonl", '{"lr": 0.1}\n'), "line 1 has no integer 'epoch'"),
    (lambda d: (d / "metrics.jsonl").write_bytes(b"\x80\xff\x00\n"), "line 1 is not text"),
    (lambda d: (d / "layers" / "000002.npz").unlink(), "000002.npz: missing"),
    (lambda d: (d / "layers" / "000001.npz").write_bytes(
        (d / "layers" / "000001.npz").read_bytes()[:100]), "000001.npz: its sha256"),
])
def test_damaged_record_is_one_line_naming_the_file(run_copy, damage, match):
    damage(run_copy)
    with pytest.raises(RunDirError, match=match) as e:
        load_run(run_copy)
    one_line(e)


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path):
    from asfp_explorer.store import append_line, read_jsonl

    f = tmp_path / "events.jsonl"
    f.write_text('{"a": 1}\n{"b": ')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_jsonl(f) == [{"a": 1}]
    assert any("incomplete" in str(w.message) for w in caught)
    append_line(f, {"c": 3})
    assert read_jsonl(f) == [{"a": 1}, {"c": 3}]
    assert cut_torn_tail(f) == 0


def test_killed_run_shows_as_interrupted(run_copy):
    summary = json.loads((run_copy / "summary.json").read_text())
    (run_copy / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    run = load_run(run_copy)
    assert run.status == "interrupted" and "--resume" in run.summary["message"]


# ------------------------------------------------------------------ resume never deletes

@pytest.mark.parametrize("damage,match", [
    (lambda d: (d / "layers" / "000002.npz").unlink(), "000002.npz: missing"),
    (lambda d: shutil.rmtree(d / "layers"), "missing"),
    (lambda d: _write(d / "metrics.jsonl", ""), "metrics.jsonl: records epochs up to -1"),
    (lambda d: _write(d / "metrics.jsonl", "\n".join(
        (d / "metrics.jsonl").read_text().splitlines()[:2]) + "\n"), "epochs 2..3 are missing"),
    (lambda d: (d / "summary.json").unlink(), "summary.json: missing"),
    (lambda d: _write(d / "config.json", "{"), "config.json: not valid JSON"),
    (lambda d: _write(d / "events.jsonl", "garbled\n" + (d / "events.jsonl").read_text()),
     "events.jsonl: line 1 is not valid JSON"),
])
def test_resume_refuses_an_inconsistent_record_and_deletes_nothing(run_copy, damage, match):
    damage(run_copy)
    before = snapshot(run_copy)
    with pytest.raises(RunDirError, match=match) as e:
        RunHandle(None, run_copy, resume=True)
    one_line(e)
    assert snapshot(run_copy) == before


def test_resume_cleans_temp_files_a_kill_left(run_copy):
    (run_copy / ".checkpoint.pt.abc123.tmp").write_bytes(b"partial")
    (run_copy / "layers" / ".000004.npz.xyz.tmp").write_bytes(b"partial")
    handle = RunHandle(None, run_copy, resume=True)
    handle._release()
    assert not list(run_copy.rglob("*.tmp"))


def test_resume_under_another_thread_count_warns(run_copy):
    env = json.loads((run_copy / "environment.json").read_text())
    before = torch.get_num_threads()
    torch.set_num_threads(1 if env["cpu_threads"] != 1 else 2)
    try:
        with pytest.warns(RuntimeWarning, match="CPU threads"):
            handle = RunHandle(None, run_copy, resume=True)
        handle._release()
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ --out and --overwrite

def test_out_that_is_a_file_or_below_one_or_too_long(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for out, match in [(f, "is a file"), (f / "run", "lies below"),
                       (tmp_path / ("n" * 256), "256 bytes long")]:
        with pytest.raises(RunDirError, match=match) as e:
            RunHandle(tiny_config(), out)
        one_line(e)
    with pytest.raises(RunDirError, match="256 bytes long"):
        load_run(tmp_path / ("n" * 256))


def test_overwrite_validates_first_and_replaces_only_run_directories(run_copy, tmp_path):
    before = snapshot(run_copy)
    bad_data = tiny_config(data={"name": "npz", "path": str(tmp_path / "none.npz")})
    with pytest.raises(Exception, match="data.path"):
        RunHandle(bad_data, run_copy, overwrite=True)
    assert snapshot(run_copy) == before

    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="'thesis.tex', which no run writes"):
        RunHandle(tiny_config(), foreign, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_overwrite_removes_a_symlinked_sub_folder_without_following_it(run_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_copy / "layers", elsewhere)
    (run_copy / "layers").symlink_to(elsewhere, target_is_directory=True)
    kept = snapshot(elsewhere)
    handle = RunHandle(tiny_config(), run_copy, overwrite=True)
    handle._release()
    assert not (run_copy / "layers").exists() and not (run_copy / "config.json").exists()
    assert snapshot(elsewhere) == kept


# ------------------------------------------------------------------ the lock

def _contend(lock_dir, barrier, results, rounds):
    for round_ in range(rounds):
        barrier.wait()
        lock = RunLock(lock_dir)
        try:
            lock.acquire()
            got = True
        except RunDirError:
            got = False
        results.put((round_, got))
        barrier.wait()  # everyone has tried while the winner holds it
        if got:
            lock.release()


def test_lock_is_taken_by_at_most_one_of_many_synchronised_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n, rounds = 6, 100  # the old pid-after-create lock let two in about 1 round in 100
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(tmp_path, barrier, results, rounds))
             for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in range(n * rounds)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    winners = [sum(g for r, g in got if r == round_) for round_ in range(rounds)]
    # The lock is free when each round starts, and the winner holds it until all have tried.
    assert winners == [1] * rounds


def test_lock_is_taken_by_at_most_one_of_many_threads(tmp_path):
    n, rounds = 8, 30
    barrier = threading.Barrier(n)
    import queue

    results = queue.Queue()
    threads = [threading.Thread(target=_contend, args=(tmp_path, barrier, results, rounds))
               for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    got = [results.get_nowait() for _ in range(n * rounds)]
    assert [sum(g for r, g in got if r == round_) for round_ in range(rounds)] == [1] * rounds


def test_lock_of_a_killed_writer_is_taken_over(tmp_path):
    import signal
    import subprocess
    import sys

    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib; from asfp_explorer.store.lock import RunLock; "
         f"RunLock({str(tmp_path)!r}).acquire(); pathlib.Path({str(ready)!r}).touch(); "
         "sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        while not ready.exists():
            assert holder.poll() is None
            threading.Event().wait(0.05)
        with pytest.raises(RunDirError, match=f"process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "lock").exists()  # left behind by the kill, but no longer held
    lock = RunLock(tmp_path)
    lock.acquire()
    lock.release()
    assert not (tmp_path / "lock").exists()


def test_npz_layer_arrays_of_the_wrong_size_are_refused(run_copy):
    from asfp_explorer.store import atomic_savez

    atomic_savez(run_copy / "layers" / "000001.npz", sizes=np.array([1]),
                 norms=np.zeros(1, np.float32), masks=np.ones(1, bool))
    with pytest.raises(RunDirError, match="do not match the run's"):
        load_run(run_copy)


def test_resume_with_another_model_is_refused(finished_run_dir):
    with pytest.raises(ConfigError, match="model.name"):
        RunHandle(tiny_config(model={"name": "resnet32"}), finished_run_dir, resume=True)
