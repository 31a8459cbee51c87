"""Schedules against the spec's test vectors (ASFP.md §5) and its closed form."""

import math

import pytest

from asfp_explorer import schedules as S

WIDTHS = (16, 32, 64, 256, 512)
# (P, T, e, P(e) to 5 decimals, floor counts for N = 16, 32, 64, 256, 512), spec §5
VECTORS = [
    (0.4, 200, 1, 0.02158, (0, 0, 1, 5, 11)),
    (0.4, 200, 5, 0.09686, (1, 3, 6, 24, 49)),
    (0.4, 200, 10, 0.17026, (2, 5, 10, 43, 87)),
    (0.4, 200, 25, 0.30000, (4, 9, 19, 76, 153)),
    (0.4, 200, 50, 0.37500, (6, 12, 24, 96, 192)),
    (0.4, 200, 100, 0.39844, (6, 12, 25, 102, 204)),
    (0.4, 200, 200, 0.40000, (6, 12, 25, 102, 204)),
    (0.3, 100, 1, 0.03149, (0, 1, 2, 8, 16)),
    (0.3, 100, 5, 0.12769, (2, 4, 8, 32, 65)),
    (0.3, 100, 12, 0.22072, (3, 7, 14, 56, 113)),
    (0.3, 100, 25, 0.28125, (4, 9, 18, 72, 144)),
    (0.3, 100, 50, 0.29883, (4, 9, 19, 76, 153)),
]


@pytest.mark.parametrize("p,t,e,value,counts", VECTORS)
def test_asymptotic_matches_spec_vectors(p, t, e, value, counts):
    got = S.asymptotic(e, t, p)
    assert round(got, 5) == value
    assert tuple(S.pruned_count(n, got) for n in WIDTHS) == counts


def test_asymptotic_constants_for_default_d():
    z = S.asymptotic_z(0.125)
    assert abs(z - 0.2500114) < 1e-7
    assert abs(-math.log(z) / (0.125 * 200) - 0.055450) < 1e-6
    # a = 3/4 P / (z - 1) = -1.0000152 P
    assert abs(0.75 / (z - 1) + 1.0000152) < 1e-7


@pytest.mark.parametrize("d", [0.05, 0.125, 0.25, 0.5, 0.7])
@pytest.mark.parametrize("t", [10, 37, 200])
def test_asymptotic_conditions(d, t):
    p = 0.4
    assert S.asymptotic(0, t, p) == pytest.approx(0, abs=1e-12)
    assert S.asymptotic(t, t, p) == p  # exactly, so floor() loses no filter
    # P(D*T) = 3/4 P (D*T need not be an integer: the function is continuous in e)
    assert S.asymptotic(d * t, t, p, d) == pytest.approx(0.75 * p, rel=1e-9)
    values = S.schedule_values("asymptotic", t, p, d)
    assert all(a < b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("d", [0.75, 0.8, 1.0, 0.0, -0.1])
def test_d_outside_range_is_refused_clearly(d):
    with pytest.raises(ValueError, match=r"^d: .*0\.75"):
        S.asymptotic(1, 10, 0.4, d)


def test_constant_linear_cubic():
    assert S.schedule_values("constant", 5, 0.3) == [0.3] * 6
    assert S.schedule_values("linear", 4, 0.4) == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    cubic = S.schedule_values("cubic", 4, 0.4)
    assert cubic == pytest.approx([0.4 * (1 - (1 - e / 4) ** 3) for e in range(5)])
    assert cubic[-1] == 0.4


def test_pruned_count_table_and_never_all():
    # spec §2: N=16: P .1/.2/.3/.4 -> 1/3/4/6; 32 -> 3/6/9/12; 64 -> 6/12/19/25; 256; 512
    table = {16: (1, 3, 4, 6), 32: (3, 6, 9, 12), 64: (6, 12, 19, 25),
             256: (25, 51, 76, 102), 512: (51, 102, 153, 204)}
    for n, counts in table.items():
        assert tuple(S.pruned_count(n, p) for p in (0.1, 0.2, 0.3, 0.4)) == counts
    assert S.pruned_count(4, 0.99) == 3
    assert S.pruned_count(1, 0.9) == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="prune_ratio"):
        S.constant(0, 10, 1.0)
    with pytest.raises(ValueError, match="epochs"):
        S.asymptotic(0, 0, 0.4)
    with pytest.raises(ValueError, match="schedule"):
        S.prune_ratio_at("exp", 0, 10, 0.4)
