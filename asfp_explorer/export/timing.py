"""Benchmarking: forward latency and throughput of the dense and the compact model.

How the numbers are made trustworthy (issue: the same model measured 0.95-1.62x in repeated
runs, the first forward calls take up to a second, denormal floats slowed one model 25x):

- warm-up until timings settle: dense/compact rounds run until the last `SETTLE_WINDOW`
  times of each model lie within `SETTLE_TOLERANCE` of their median (or a time cap is hit,
  which the result says: `settled: false`);
- dense and compact alternate (ABBA order), so drifts (clocks, caches, other processes) hit
  both alike, and each round's dense/compact ratio is one speed-up sample;
- enough repeats for a median with its spread: at least `MIN_REPEATS`, more while the time
  budget lasts; every row reports median, quartiles (IQR) and min-max of both latencies and
  of the speed-up;
- on the CPU, denormal floats are flushed to zero while timing (`torch.set_flush_denormal`;
  the result says so), since a few denormals can dominate a pruned model's run time.

Why a thread of its own: the flush flag lives in each CPU thread's floating-point control
register, and OpenMP worker threads copy it from their master when its pool is created. On the
caller's thread, whose pool already exists, only part of each parallel op would be flushed
(measured: half of an elementwise op on 2 threads), and the caller's own arithmetic (a training
run in the same kernel) would change. A fresh thread sets the flag, then creates its pool; the
caller is left exactly as it was. The result reports whether flushing was verified on all
intra-op threads (`flush_denormal`).
"""

from __future__ import annotations

import copy
import statistics
import threading
import time
from typing import Any, Sequence

import torch
from torch import nn

SETTLE_WINDOW = 5  # warm-up rounds whose times must agree
SETTLE_TOLERANCE = 0.10  # (max - min) / median of that window, per model
MIN_REPEATS = 20
MAX_REPEATS = 200


def _time_ms(model: nn.Module, x: torch.Tensor, cuda: bool) -> float:
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        end.synchronize()  # sync: the measured interval must have finished on the device
        return start.elapsed_time(end)
    t = time.perf_counter()
    model(x)
    return (time.perf_counter() - t) * 1e3


def _round(models: dict[str, nn.Module], x: torch.Tensor, cuda: bool, r: int) -> dict[str, float]:
    """One timed forward of each model; the order flips every round (ABBA)."""
    order = list(models) if r % 2 == 0 else list(models)[::-1]
    return {k: _time_ms(models[k], x, cuda) for k in order}


def _settled(times: Sequence[float]) -> bool:
    last = times[-SETTLE_WINDOW:]
    if len(last) < SETTLE_WINDOW:
        return False
    return (max(last) - min(last)) <= SETTLE_TOLERANCE * statistics.median(last)


def spread(values: Sequence[float]) -> dict[str, float]:
    """median, quartiles (q1, q3: the IQR) and min-max of `values`."""
    v = sorted(values)
    q1, q3 = (statistics.quantiles(v, n=4, method="inclusive")[::2] if len(v) > 1 else (v[0], v[0]))
    return {"median": statistics.median(v), "q1": q1, "q3": q3, "min": v[0], "max": v[-1]}


def _warm_up(models: dict[str, nn.Module], x: torch.Tensor, cuda: bool, rounds: int | None,
             budget_s: float) -> tuple[int, bool]:
    """Warm-up rounds until every model's times settle (or `rounds` exactly, if given).
    Returns (rounds run, settled)."""
    if rounds is not None:
        for r in range(rounds):
            _round(models, x, cuda, r)
        return rounds, False
    times: dict[str, list[float]] = {k: [] for k in models}
    start, r = time.perf_counter(), 0
    while True:
        for k, t in _round(models, x, cuda, r).items():
            times[k].append(t)
        r += 1
        if all(_settled(t) for t in times.values()):
            return r, True
        if time.perf_counter() - start > budget_s:
            return r, False


def _flush_denormals_verified() -> bool:
    """Flush denormals on this thread and check that a parallel op flushes on every worker."""
    if not torch.set_flush_denormal(True):
        return False  # the CPU cannot flush
    tiny = torch.full((1 << 20,), 1e-39)  # large enough to be split across intra-op threads
    return bool(((tiny * 1.0) == 0).all())


def benchmark(dense: nn.Module, compact: nn.Module, input_size: Sequence[int],
              batch_sizes: Sequence[int] = (1, 64, 256), device: str | torch.device = "cpu",
              repeats: int | None = None, warmup: int | None = None,
              budget_s: float = 3.0, warmup_budget_s: float = 5.0) -> dict[str, Any]:
    """Forward latency (ms) and throughput (images/s) of both models, with their spread.

    Per batch size: warm-up until timings settle (at most `warmup_budget_s` seconds; `warmup`
    = a fixed number of rounds instead), then alternating timed rounds: `repeats` of them, or
    by default at least MIN_REPEATS and more while `budget_s` lasts (at most MAX_REPEATS).
    Row fields: `dense_ms`, `compact_ms`, `speedup` are medians (speed-up: of each round's
    dense/compact ratio); `*_q1`, `*_q3` the quartiles and `*_min`, `*_max` the extremes.
    On CUDA, times come from CUDA events; on the CPU denormals are flushed to zero while
    timing, in a thread of its own (the caller's settings stay as they are). Also returns the
    conv MACs of both (batch 1) and the theoretical reduction. The models are not changed
    (copies are moved to `device`).
    """
    from ..flops import conv_macs

    device = torch.device(device)
    cuda = device.type == "cuda"
    models = {"dense": copy.deepcopy(dense).eval().to(device), "compact": copy.deepcopy(compact).eval().to(device)}
    macs = {k: conv_macs(m, input_size) for k, m in models.items()}
    outcome: dict[str, Any] = {}

    def measure() -> None:
        try:
            outcome["flush"] = (not cuda) and _flush_denormals_verified()
            with torch.inference_mode():
                outcome["rows"] = _measure(models, input_size, batch_sizes, device, repeats, warmup,
                                           budget_s, warmup_budget_s)
        except BaseException as e:  # handed to the caller's thread below
            outcome["error"] = e

    worker = threading.Thread(target=measure, name="asfp-benchmark", daemon=True)
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "input_size": list(input_size), "flush_denormal": bool(outcome["flush"]),
            "timer": "CUDA events" if cuda else "time.perf_counter",
            "statistic": "median over alternating repeats after warm-up; spread: quartiles "
                         "(q1-q3) and min-max",
            "dense_macs": macs["dense"], "compact_macs": macs["compact"],
            "mac_reduction_percent": 100.0 * (1.0 - macs["compact"] / macs["dense"]),
            "batches": outcome["rows"]}


def _measure(models: dict[str, nn.Module], input_size: Sequence[int], batch_sizes: Sequence[int],
             device: torch.device, repeats: int | None, warmup: int | None, budget_s: float,
             warmup_budget_s: float) -> list[dict[str, Any]]:
    """The rows of `benchmark`, one per batch size."""
    cuda = device.type == "cuda"
    rows = []
    for b in batch_sizes:
        # a generator of its own: timing leaves the process's random stream alone
        x = torch.randn((b, *input_size), generator=torch.Generator().manual_seed(b)).to(device)
        rounds, settled = _warm_up(models, x, cuda, warmup, warmup_budget_s)
        times: dict[str, list[float]] = {k: [] for k in models}
        start, r = time.perf_counter(), 0
        while True:
            for k, t in _round(models, x, cuda, rounds + r).items():  # ABBA goes on
                times[k].append(t)
            r += 1
            if repeats is not None:
                if r >= repeats:
                    break
            elif r >= MAX_REPEATS or (r >= MIN_REPEATS and time.perf_counter() - start > budget_s):
                break
        d, c = spread(times["dense"]), spread(times["compact"])
        s = spread([a / b_ for a, b_ in zip(times["dense"], times["compact"])])
        rows.append({
            "batch_size": int(b), "repeats": r, "warmup_rounds": rounds, "settled": settled,
            "dense_ms": d["median"], "compact_ms": c["median"],
            "dense_images_per_s": b / d["median"] * 1e3, "compact_images_per_s": b / c["median"] * 1e3,
            "speedup": s["median"], "time_reduction_percent": 100.0 * (1.0 - c["median"] / d["median"]),
            **{f"dense_ms_{k}": v for k, v in d.items() if k != "median"},
            **{f"compact_ms_{k}": v for k, v in c.items() if k != "median"},
            **{f"speedup_{k}": v for k, v in s.items() if k != "median"},
        })
    return rows
