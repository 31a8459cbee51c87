"""fvcore's MAC count of the compact model, computed on a thread beside training.

The count depends only on the architecture and on how many filters each layer keeps (which
filters does not change any conv's shape), so a fresh model built from the run's config
stands in for the trained one: no weights have to leave the training thread. Results are
cached by the per-layer kept counts; a constant-ratio run therefore traces the model once.

Why a thread is safe: `export.compact` traces with torch.fx through
`models.tracing.ThreadLocalTracer`, whose process-wide patches hand every other thread's
module calls straight to the originals, and fvcore's torch.jit trace keeps its state per
thread (`flops.fvcore_conv_macs`, which also keeps fvcore from swapping warning filters).
Training therefore holds no lock and never waits for a count.

Unit: MACs, multiply-accumulates of conv layers (fvcore: one fused multiply-add = 1).
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

Masks = Sequence[np.ndarray]  # per prunable layer, bool per filter, True = kept
Count = Callable[[Mapping[str, Any], Mapping[str, Any], Masks], int]


def compact_conv_macs(config: Mapping[str, Any], info: Mapping[str, Any], masks: Masks) -> int:
    """fvcore conv MACs of the compact model that `masks` leave (equals the exact count).

    Safe on any thread, beside training (see the module docstring).
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
    small = compact(model, named, input_size)
    return int(fvcore_conv_macs(small, input_size))


_WAITER: ThreadPoolExecutor | None = None  # the one thread that counts, shared by dashboards
_SHARED_LOCK = threading.Lock()
_COUNTERS: dict[tuple, Any] = {}


def warm_up() -> None:
    """Import what a count needs now, in the background (seconds of CPU that had better not
    overlap the first epochs)."""
    def load() -> None:
        from .. import export  # noqa: F401
        from ..flops import _quiet_fvcore

        _quiet_fvcore()

    shared_waiter().submit(load)


def shared_waiter() -> ThreadPoolExecutor:
    """The counting thread (created on first use)."""
    global _WAITER
    with _SHARED_LOCK:
        if _WAITER is None:
            _WAITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asfp-fvcore")
        return _WAITER


def mac_counter(model_name: str, input_size: tuple[int, int, int], num_classes: int):
    """A `flops.MacCounter` for a registry model, cached per process (one trace each)."""
    from ..flops import MacCounter
    from ..models import build_model

    key = (model_name, tuple(int(s) for s in input_size), int(num_classes))
    with _SHARED_LOCK:
        if key in _COUNTERS:
            return _COUNTERS[key]
    counter = MacCounter(build_model(model_name, key[2], key[1][0]), key[1])
    with _SHARED_LOCK:
        return _COUNTERS.setdefault(key, counter)


# ------------------------------------------------------------------ the caller's side

class CompactMacsWorker:
    """Counts compact-model MACs for submitted masks without blocking anyone.

    `submit` only hands the masks to the executor (microseconds); `results()` returns the
    counts done so far, by epoch. Errors become one-line messages, never exceptions.
    """

    def __init__(self, config: Mapping[str, Any], info: Mapping[str, Any],
                 count: Count = compact_conv_macs, executor: Executor | None = None,
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
        """Nothing to stop: the shared thread stays for the next run."""
