"""fvcore's MAC count of the compact model, computed off the training thread, in a process.

The count depends only on the architecture and on how many filters each layer keeps (which
filters does not change any conv's shape), so a fresh model built from the run's config
stands in for the trained one: no weights have to leave the training thread. Results are
cached by the per-layer kept counts; a constant-ratio run therefore traces the model once.

Why a separate process: `export.compact` and `flops.MacCounter` trace with torch.fx, and fx
tracing patches `torch.nn.Module.__call__` for the whole interpreter while it runs. In this
process, the trace lock (models/trace_lock.py) would make each count wait for the epoch in
progress and hold the next one up; in a process of its own it costs training nothing. The process is `python -m` this module,
started on first use and shared by every dashboard of the kernel (not `multiprocessing`:
spawn would re-run a user's unguarded `__main__`, fork would copy a threaded, OpenMP-using
process). It has its own session, so interrupting the kernel does not kill it, and it exits
when the kernel closes its pipe.

Unit: MACs, multiply-accumulates of conv layers (fvcore: one fused multiply-add = 1).
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
import warnings
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Masks = Sequence[np.ndarray]  # per prunable layer, bool per filter, True = kept
Count = Callable[[Mapping[str, Any], Mapping[str, Any], Masks], int]


# ------------------------------------------------------------------ the work (in the process)

def compact_conv_macs(config: Mapping[str, Any], info: Mapping[str, Any], masks: Masks) -> int:
    """fvcore conv MACs of the compact model that `masks` leave (equals the exact count).

    Traces with torch.fx: call it where no other thread runs a model (`count_in_process`).
    """
    import torch

    from ..export import compact
    from ..flops import fvcore_conv_macs
    from ..models import build_model

    input_size = tuple(int(s) for s in info["input_size"])
    model = build_model(config["model"]["name"], int(info["num_classes"]), input_size[0])
    model.eval()
    named = {n: torch.tensor(np.asarray(m, dtype=bool)) for n, m in
             zip(info["layer_names"], masks)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore and tracing warn on every call
        small = compact(model, named, input_size)
        return int(fvcore_conv_macs(small, input_size))


def build_mac_counter(model_name: str, input_size: tuple[int, int, int], num_classes: int):
    """A `flops.MacCounter` for a registry model (traces with torch.fx)."""
    from ..flops import MacCounter
    from ..models import build_model

    return MacCounter(build_model(model_name, num_classes, input_size[0]), input_size)


def _ready() -> bool:
    """Answers once the worker has imported what a count needs."""
    from .. import export, flops  # noqa: F401

    return True


JOBS: dict[str, Callable[..., Any]] = {"compact_conv_macs": compact_conv_macs,
                                       "build_mac_counter": build_mac_counter, "ready": _ready}


def _serve() -> None:
    """The worker process: read (job, args) pickles on stdin, answer (ok, value) on stdout."""
    import torch

    torch.set_num_threads(1)  # leave the cores to training; a count takes a few tenths of a s
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by a library goes to stderr, not into the answers
    requests = sys.stdin.buffer
    while True:
        try:
            name, args = pickle.load(requests)
        except EOFError:  # the kernel closed the pipe (or exited)
            return
        try:
            answer = (True, JOBS[name](*args))
        except Exception as e:
            text = str(e).strip().splitlines()
            answer = (False, f"{type(e).__name__}" + (f": {text[0]}" if text else ""))
        pickle.dump(answer, answers)
        answers.flush()


class WorkerProcess:
    """One long-lived `python -m asfp_explorer.viz.compact_macs`; `call` blocks until it answers
    (the waiting thread holds no GIL while it reads the pipe)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def call(self, job: str, *args: Any) -> Any:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            try:
                pickle.dump((job, args), self._proc.stdin)
                self._proc.stdin.flush()
                ok, value = pickle.load(self._proc.stdout)
            except (OSError, EOFError, pickle.UnpicklingError) as e:
                self._proc.kill()
                self._proc = None
                raise RuntimeError(f"the counting process died ({type(e).__name__})") from None
        if not ok:
            raise RuntimeError(value)
        return value

    @staticmethod
    def _start() -> subprocess.Popen:
        env = dict(os.environ)
        # The same imports as this kernel, even for a source checkout that is not installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        return subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, start_new_session=True)

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.stdin.close()  # the worker sees EOF and exits
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc = None

    def shutdown(self) -> None:
        """At interpreter exit: end the worker without taking the lock (a daemon thread may
        still hold it, waiting on an answer that no longer matters)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()


_WORKER = WorkerProcess()
atexit.register(_WORKER.shutdown)
_WAITER: ThreadPoolExecutor | None = None  # one thread that waits on the worker's answers
_SHARED_LOCK = threading.Lock()
_COUNTERS: dict[tuple, Any] = {}


def warm_up() -> None:
    """Start the worker process now, in the background (its imports take seconds of CPU that
    had better not overlap the first epochs)."""
    def ping() -> None:
        try:
            _WORKER.call("ready")
        except Exception:  # a failed start shows up, with its message, at the first count
            pass

    threading.Thread(target=ping, name="asfp-fvcore-start", daemon=True).start()


def count_in_process(config: Mapping[str, Any], info: Mapping[str, Any], masks: Masks) -> int:
    """`compact_conv_macs`, run in the worker process."""
    return _WORKER.call("compact_conv_macs", dict(config), dict(info),
                        [np.asarray(m, dtype=bool) for m in masks])


def shared_waiter() -> ThreadPoolExecutor:
    global _WAITER
    with _SHARED_LOCK:
        if _WAITER is None:
            _WAITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asfp-fvcore")
        return _WAITER


def training_in_this_process() -> bool:
    """Whether a RunHandle trains in a background thread here (its thread is 'asfp-train')."""
    return any(t.name == "asfp-train" and t.is_alive() for t in threading.enumerate())


def mac_counter(model_name: str, input_size: tuple[int, int, int], num_classes: int):
    """`build_mac_counter`, cached per kernel. While a run trains in this process the trace
    happens in the worker process instead (see the module docstring)."""
    key = (model_name, tuple(int(s) for s in input_size), int(num_classes))
    with _SHARED_LOCK:
        if key in _COUNTERS:
            return _COUNTERS[key]
    if training_in_this_process():
        counter = _WORKER.call("build_mac_counter", *key)
    else:
        counter = build_mac_counter(*key)
    with _SHARED_LOCK:
        _COUNTERS[key] = counter
    return counter


# ------------------------------------------------------------------ the caller's side

class CompactMacsWorker:
    """Counts compact-model MACs for submitted masks without blocking anyone.

    `submit` only hands the masks to the executor (microseconds); `results()` returns the
    counts done so far, by epoch. Errors become one-line messages, never exceptions.
    """

    def __init__(self, config: Mapping[str, Any], info: Mapping[str, Any],
                 count: Count = count_in_process, executor: Executor | None = None,
                 on_result: Callable[[int, int], None] | None = None):
        self.config, self.info, self._count = dict(config), dict(info), count
        self._executor = executor
        self.on_result = on_result
        self._lock = threading.Lock()
        self._results: dict[int, int] = {}
        self._futures: dict[tuple[int, ...], Future] = {}  # kept-count signature -> count
        self._outstanding = 0  # submitted epochs whose result is not recorded yet
        self._all_done = threading.Condition(self._lock)
        self.errors: list[str] = []

    def submit(self, epoch: int, masks: Masks) -> None:
        key = tuple(int(np.sum(m)) for m in masks)
        with self._lock:
            fut = self._futures.get(key)
            if fut is None:
                try:
                    executor = self._executor or shared_waiter()
                    fut = executor.submit(self._count, self.config, self.info,
                                          [np.asarray(m) for m in masks])
                except Exception as e:  # e.g. the executor was shut down
                    self._fail(epoch, e)
                    return
                self._futures[key] = fut
            self._outstanding += 1
        fut.add_done_callback(lambda f, epoch=epoch: self._done(epoch, f))

    def _done(self, epoch: int, fut: Future) -> None:
        try:
            macs = int(fut.result())
        except Exception as e:  # a count that fails must not take the dashboard down
            with self._lock:
                self._fail(epoch, e)
                self._settle()
            return
        with self._lock:
            self._results[epoch] = macs
            self._settle()
        if self.on_result is not None:
            self.on_result(epoch, macs)

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._all_done.notify_all()

    def _fail(self, epoch: int, e: BaseException) -> None:
        if not self.errors:
            text = str(e).strip().splitlines()
            self.errors.append(f"fvcore count failed at epoch {epoch}: {type(e).__name__}"
                               + (f": {text[0]}" if text else ""))

    def results(self) -> dict[int, int]:
        with self._lock:
            return dict(self._results)

    def idle(self) -> bool:
        """True when every submitted count has finished (or failed)."""
        with self._lock:
            return self._outstanding == 0

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted count is done; False if `timeout` seconds passed first."""
        with self._lock:
            return self._all_done.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self) -> None:
        """Nothing to stop: the shared process stays for the next run (it exits with Python)."""


if __name__ == "__main__":
    _serve()
