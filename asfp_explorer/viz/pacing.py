"""How long a redraw loop waits: at most `busy_share` of the wall time goes to redraws.

A redraw is pure Python (plotly's validation, JSON) and holds the GIL, which a training
thread in the same process needs to launch every op, and on a small machine it takes a core
from training in another process. After a redraw that took `spent_s` seconds, the loop waits
at least `spent_s * (1 / busy_share - 1)`, and never less than its own period.
"""

from __future__ import annotations

DEFAULT_BUSY_SHARE = 0.03


def next_wait(spent_s: float, period_s: float, busy_share: float = DEFAULT_BUSY_SHARE) -> float:
    """Seconds to wait before the next redraw (`spent_s`: the last one's seconds)."""
    return max(period_s, spent_s * (1.0 / busy_share - 1.0))


def check_busy_share(busy_share: float) -> float:
    """`busy_share`, or a one-line ValueError naming the field and what is allowed."""
    if not 0.0 < busy_share <= 1.0:
        raise ValueError(f"busy_share: {busy_share!r} is not allowed; expected a share in (0, 1]")
    return float(busy_share)
