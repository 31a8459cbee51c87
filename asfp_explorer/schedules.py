"""Prune-ratio schedules: pure functions of completed epochs (spec §5).

Every schedule maps e (epochs completed, 0..T) to the fraction of each layer's filters that is
zeroed. No optimiser, no hidden state; `schedule_values` gives the whole curve at once.
"""

from __future__ import annotations

import math
from functools import lru_cache

SCHEDULES = ("constant", "asymptotic", "linear", "cubic")
D_MAX = 0.75  # spec §5: P(D*T) = 3/4 P has a solution in (0, 1) only for 0 < D < 3/4


def _check(e: float, total_epochs: int, prune_ratio: float) -> None:
    if not (isinstance(prune_ratio, (int, float)) and 0.0 <= prune_ratio < 1.0):
        raise ValueError(f"prune_ratio: {prune_ratio!r} is outside [0, 1)")
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
        raise ValueError(f"epochs: {total_epochs!r} must be a positive integer")
    if not 0 <= e <= total_epochs:
        raise ValueError(f"epoch: {e!r} is outside [0, {total_epochs}]")


def check_d(d: float) -> None:
    """Refuse a D for which the asymptotic schedule has no solution."""
    if not (isinstance(d, (int, float)) and 0.0 < d < D_MAX):
        raise ValueError(
            f"d: {d!r} is not in (0, 0.75); the asymptotic schedule P(D*T) = 3/4*P "
            "has no exponential solution for D >= 0.75 (try the default 0.125)"
        )


@lru_cache(maxsize=64)
def asymptotic_z(d: float) -> float:
    """The root z in (0, 1) of 3 (z^(1/D) - 1) = 4 (z - 1), with z = exp(-k D T).

    Solved by bisection: f(z) = 3 (z^(1/D) - 1) - 4 (z - 1) is positive just above 0 and
    negative just below 1 exactly when D < 3/4 (f'(1) = 3/D - 4 > 0).
    """
    check_d(d)

    def f(z: float) -> float:
        return 3.0 * (z ** (1.0 / d) - 1.0) - 4.0 * (z - 1.0)

    lo, hi = 1e-300, 1.0 - 1e-15
    if f(hi) >= 0:  # D so close to 3/4 that the root merges with z = 1 in float64
        raise ValueError(f"d: {d!r} is too close to 0.75 for a numerically stable schedule")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def constant(e: float, total_epochs: int, prune_ratio: float) -> float:
    """SFP: P(e) = P for every e, including e = 0."""
    _check(e, total_epochs, prune_ratio)
    return prune_ratio


def asymptotic(e: float, total_epochs: int, prune_ratio: float, d: float = 0.125) -> float:
    """ASFP: P(e) = a exp(-k e) + b with P(0) = 0, P(D T) = 3/4 P, P(T) = P exactly."""
    _check(e, total_epochs, prune_ratio)
    if e >= total_epochs:
        return prune_ratio  # forced: floating point must not lose a filter to floor()
    if e <= 0:
        return 0.0  # exactly; for a tiny D, k is infinite and k * 0 would be NaN
    z = asymptotic_z(d)
    k = -math.log(z) / (d * total_epochs)
    a = 0.75 * prune_ratio / (z - 1.0)
    return min(prune_ratio, a * math.exp(-k * e) - a)  # rounding must not overshoot P


def linear(e: float, total_epochs: int, prune_ratio: float, ramp_epochs: int | None = None) -> float:
    """P(e) = P e / T_ramp, constant P after T_ramp (default T_ramp = T)."""
    _check(e, total_epochs, prune_ratio)
    ramp = total_epochs if ramp_epochs is None else ramp_epochs
    return prune_ratio * min(1.0, e / ramp)


def cubic(e: float, total_epochs: int, prune_ratio: float, ramp_epochs: int | None = None) -> float:
    """Zhu & Gupta 2017: P(e) = P (1 - (1 - e/T_ramp)^3), constant P after T_ramp."""
    _check(e, total_epochs, prune_ratio)
    ramp = total_epochs if ramp_epochs is None else ramp_epochs
    return prune_ratio * (1.0 - (1.0 - min(1.0, e / ramp)) ** 3)


def prune_ratio_at(
    schedule: str, e: float, total_epochs: int, prune_ratio: float, d: float = 0.125
) -> float:
    """The scheduled prune ratio after `e` completed epochs, by schedule name."""
    if schedule == "constant":
        return constant(e, total_epochs, prune_ratio)
    if schedule == "asymptotic":
        return asymptotic(e, total_epochs, prune_ratio, d)
    if schedule == "linear":
        return linear(e, total_epochs, prune_ratio)
    if schedule == "cubic":
        return cubic(e, total_epochs, prune_ratio)
    raise ValueError(f"schedule: unknown {schedule!r}; allowed: {', '.join(SCHEDULES)}")


def schedule_values(schedule: str, total_epochs: int, prune_ratio: float, d: float = 0.125) -> list[float]:
    """P(e) for every e = 0..T (T + 1 values)."""
    _check(0, total_epochs, prune_ratio)
    return [prune_ratio_at(schedule, e, total_epochs, prune_ratio, d) for e in range(total_epochs + 1)]


def pruned_count(num_filters: int, prune_ratio: float) -> int:
    """floor(N P) filters to zero in a layer of N, never all of them (spec §2)."""
    # The tiny epsilon keeps e.g. 0.3 * 10 = 2.9999999999999996 from losing a filter.
    return min(int(math.floor(num_filters * prune_ratio + 1e-9)), num_filters - 1)
