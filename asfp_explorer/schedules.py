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
def asymptotic_rate(d: float) -> float:
    """u = k D T = -ln z > 0, where z in (0, 1) is the root of 3 (z^(1/D) - 1) = 4 (z - 1).

    In terms of u the equation is g(u) = 3 expm1(-u/D) - 4 expm1(-u) = 0. expm1 keeps full
    relative precision for small u, which is where the root lies as D approaches 3/4 (the old
    solver in z lost it to the cancellation in z - 1 and refused D >= 0.72). The bracket is
    exact: g(u)/u -> 4 - 3/D < 0 as u -> 0 (so the degenerate root u = 0, i.e. z = 1, is never
    a candidate), and g(ln 4) = 3 * 4^(-1/D) > 0 for every D. Bisection then halves it until
    the two ends are adjacent floats; the upper end (g > 0, hence u > 0) is returned.
    """
    check_d(d)

    def g(u: float) -> float:
        return 3.0 * math.expm1(-u / d) - 4.0 * math.expm1(-u)

    lo, hi = 0.0, math.log(4.0)  # g < 0 just above lo (analytically), g(hi) > 0
    while True:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:  # the ends are adjacent floats
            return hi
        if g(mid) > 0:
            hi = mid
        else:
            lo = mid


def asymptotic_z(d: float) -> float:
    """The root z = exp(-k D T) in (0, 1) of 3 (z^(1/D) - 1) = 4 (z - 1) (spec §5)."""
    return math.exp(-asymptotic_rate(d))


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
    # a exp(-k e) + b with b = -a, a = 3/4 P / (z - 1), written with expm1 so that a D near
    # 3/4 (z near 1, k near 0) loses no precision: P(e) = 3/4 P expm1(-k e) / expm1(-k D T).
    u = asymptotic_rate(d)
    k = u / (d * total_epochs)
    return min(prune_ratio, 0.75 * prune_ratio * math.expm1(-k * e) / math.expm1(-u))


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
    schedule: str, e: float, total_epochs: int, prune_ratio: float, d: float = 0.125,
    reached: float = 0.0,
) -> float:
    """The scheduled prune ratio after `e` completed epochs, by schedule name.

    `reached`: a ratio the run had already reached when its epochs were changed; the schedule
    never falls below it (nor above `prune_ratio`). 0 (the default) leaves the schedule as is.
    """
    if schedule == "constant":
        value = constant(e, total_epochs, prune_ratio)
    elif schedule == "asymptotic":
        value = asymptotic(e, total_epochs, prune_ratio, d)
    elif schedule == "linear":
        value = linear(e, total_epochs, prune_ratio)
    elif schedule == "cubic":
        value = cubic(e, total_epochs, prune_ratio)
    else:
        raise ValueError(f"schedule: unknown {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    return value if reached <= value else min(reached, prune_ratio)


def schedule_values(schedule: str, total_epochs: int, prune_ratio: float, d: float = 0.125) -> list[float]:
    """P(e) for every e = 0..T (T + 1 values)."""
    _check(0, total_epochs, prune_ratio)
    return [prune_ratio_at(schedule, e, total_epochs, prune_ratio, d) for e in range(total_epochs + 1)]


def pruned_count(num_filters: int, prune_ratio: float) -> int:
    """floor(N P) filters to zero in a layer of N, never all of them (spec §2)."""
    # The tiny epsilon keeps e.g. 0.3 * 10 = 2.9999999999999996 from losing a filter.
    return min(int(math.floor(num_filters * prune_ratio + 1e-9)), num_filters - 1)
