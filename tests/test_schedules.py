"""Schedules against the spec's test vectors (docs/method.md §5) and its closed form."""

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


# ------------------------------------------------------------------ D up to its real limit

def mp_root(d):
    """Independent root of 3 (z^(1/D) - 1) = 4 (z - 1) in (0, 1): 60-digit bisection in z."""
    import mpmath as mp

    with mp.workdps(60):
        dd = mp.mpf(d)

        def f(z):
            return 3 * (z ** (1 / dd) - 1) - 4 * (z - 1)

        lo, hi = mp.mpf(0), mp.mpf(1) - mp.mpf(10) ** -40  # f(0) = 1 > 0, f < 0 just below 1
        for _ in range(250):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
        return float(lo)


def test_analytic_roots():
    # D = 1/2: 3 (z^2 - 1) = 4 (z - 1) -> 3 (z + 1) = 4 -> z = 1/3
    assert S.asymptotic_z(0.5) == pytest.approx(1 / 3, rel=1e-14)
    # D = 1/3: 3 (z^2 + z + 1) = 4 -> z = (sqrt(21) - 3) / 6
    assert S.asymptotic_z(1 / 3) == pytest.approx((math.sqrt(21) - 3) / 6, rel=1e-14)


@pytest.mark.parametrize("d", [1e-3, 0.01, 0.125, 0.3, 0.6, 0.7, 0.71, 0.72, 0.725, 0.73,
                               0.74, 0.745, 0.749, 0.7499, 0.74999])
def test_root_matches_high_precision_solution(d):
    z = S.asymptotic_z(d)
    assert 0 < z < 1  # never the degenerate root z = 1
    assert z == pytest.approx(mp_root(d), rel=1e-9)


def test_d_074_is_solved():
    # issue 8: D = 0.74 was refused although z ~ 0.925 exists
    assert S.asymptotic_z(0.74) == pytest.approx(0.92535, abs=1e-5)


@pytest.mark.parametrize("d", [1e-6, 0.02, 0.125, 0.4, 0.72, 0.73, 0.74, 0.749, 0.7499999,
                               math.nextafter(0.75, 0)])
@pytest.mark.parametrize("t", [3, 10, 200])
def test_three_conditions_hold_up_to_the_limit(d, t):
    p = 0.4
    values = S.schedule_values("asymptotic", t, p, d)
    assert values[0] == 0 and values[-1] == p
    assert all(math.isfinite(v) for v in values)
    assert all(a <= b for a, b in zip(values, values[1:]))
    # independent check of the defining condition P(D T) = 3/4 P, from the exponential's form
    # a exp(-k e) + b evaluated with the high-precision root:
    # P(e) = 3/4 P (1 - z^(e/(DT))) / (1 - z)
    z = mp_root(d) if d < 0.7499 else None
    assert S.asymptotic(d * t, t, p, d) == pytest.approx(0.75 * p, rel=1e-9)
    if z is not None:
        e = t / 2
        want = 0.75 * p * (1 - z ** (e / (d * t))) / (1 - z)
        assert S.asymptotic(e, t, p, d) == pytest.approx(want, rel=1e-8)


def test_near_the_limit_the_curve_becomes_the_straight_line():
    # spec §5: at D = 3/4 the curve degenerates to a straight line, P(e) = P e / T
    t, p = 20, 0.4
    got = S.schedule_values("asymptotic", t, p, 0.75 - 1e-9)
    assert got == pytest.approx([p * e / t for e in range(t + 1)], abs=1e-6)


# ------------------------------------------------------------------ a ratio already reached

def test_reached_is_a_floor_capped_by_the_target():
    assert S.prune_ratio_at("asymptotic", 1, 10, 0.4, reached=0.3) == 0.3
    assert S.prune_ratio_at("asymptotic", 9, 10, 0.4, reached=0.3) == S.asymptotic(9, 10, 0.4)
    assert S.prune_ratio_at("constant", 0, 10, 0.2, reached=0.3) == 0.2  # never above P
    for e in range(11):  # 0 leaves every schedule exactly as it is
        for name in S.SCHEDULES:
            plain = S.prune_ratio_at(name, e, 10, 0.4)
            assert S.prune_ratio_at(name, e, 10, 0.4, reached=0.0) == plain


# ------------------------------------------------------------------ learning rate (spec §8)

from asfp_explorer.config import RunConfig  # noqa: E402
from asfp_explorer.engine.trainer import lr_at, validate_changes  # noqa: E402


def authors_resnet110_lr(epoch):
    """The authors' adjust_learning_rate with their ResNet-110 script's arguments
    (--learning_rate 0.01 --schedule 1 60 120 160 --gammas 10 0.2 0.2 0.2)."""
    lr = 0.01
    for gamma, step in zip((10, 0.2, 0.2, 0.2), (1, 60, 120, 160)):
        if epoch >= step:
            lr = lr * gamma
        else:
            break
    return lr


def test_resnet110_first_epoch_runs_at_a_tenth():
    cfg = RunConfig().with_changes(model={"name": "resnet110"}, training={"epochs": 200})
    assert [lr_at(cfg, e) for e in range(200)] == pytest.approx(
        [authors_resnet110_lr(e) for e in range(200)], rel=1e-12)
    assert lr_at(cfg, 0) == pytest.approx(0.01)


def test_first_epoch_lr_is_only_resnet110_by_default_and_configurable():
    cfg = RunConfig().with_changes(training={"epochs": 200})  # resnet20
    assert lr_at(cfg, 0) == 0.1 and lr_at(cfg, 60) == pytest.approx(0.02)
    off = RunConfig().with_changes(model={"name": "resnet110"}, training={"first_epoch_lr": 0.1})
    assert lr_at(off, 0) == 0.1
    on = RunConfig().with_changes(training={"first_epoch_lr": 0.05})
    assert lr_at(on, 0) == 0.05 and lr_at(on, 1) == 0.1
    with pytest.raises(ValueError, match="^training.first_epoch_lr"):
        RunConfig().with_changes(training={"first_epoch_lr": 0})


# ------------------------------------------------------------------ a change of T during a run

def steered(method, t_old, changed_at, t_new, **extra):
    """Learning rates and scheduled ratios a run uses when `epochs` goes from t_old to t_new
    after `changed_at` completed epochs: (lrs of epochs 0..t_new-1, ratios at e = 0..t_new)."""
    old = RunConfig().with_changes(pruning={"method": method, "prune_ratio": 0.4, **extra},
                                   training={"epochs": t_old})
    new = validate_changes(old, {"training": {"epochs": t_new}}, changed_at)
    lrs = [lr_at(old if e < changed_at else new, e) for e in range(t_new)]

    def ratio(cfg, e):
        p = cfg.pruning
        return S.prune_ratio_at(p.schedule, e, cfg.training.epochs, p.prune_ratio, p.d,
                                p.ratio_reached)

    ratios = [ratio(old if e <= changed_at else new, e) for e in range(t_new + 1)]
    return old, new, lrs, ratios


def test_passed_milestones_stay_passed():
    # T 10 -> 20 after 7 epochs: milestones 3, 6, 8 -> 6, 12, 16. Epochs 3..6 had 1 and 2
    # decays; the new schedule would have only 1 at epoch 7 (rate back up 5x). It keeps 2
    # until the new schedule reaches more: 2 at 12 (no change), 3 at 16.
    old, new, lrs, _ = steered("asfp", 10, 7, 20)
    assert new.training.lr_decays_reached == 2
    g = 0.2
    want = [0.1] * 3 + [0.1 * g] * 3 + [0.1 * g * g] * 10 + [0.1 * g ** 3] * 4
    assert lrs == pytest.approx(want, rel=1e-12)


def test_a_milestone_not_yet_applied_moves_with_t():
    # T 10 -> 20 after 6 epochs: the old milestone 6 would apply to epoch 6, not yet trained,
    # so it moves (to 12 under the new T); only the decay at 3 has been applied.
    _, new, lrs, _ = steered("asfp", 10, 6, 20)
    assert new.training.lr_decays_reached == 1
    assert lrs[6] == pytest.approx(0.02) and lrs[12] == pytest.approx(0.004)


@pytest.mark.parametrize("method", ["asfp", "sfp", "linear", "cubic", "hard-asfp"])
@pytest.mark.parametrize("t_old,t_new", [(10, 20), (20, 10), (10, 11), (30, 8), (5, 200)])
def test_rate_never_rises_and_ratio_never_falls(method, t_old, t_new):
    for changed_at in range(0, min(t_old, t_new)):
        old, new, lrs, ratios = steered(method, t_old, changed_at, t_new)
        assert all(b <= a for a, b in zip(lrs, lrs[1:])), (changed_at, lrs)
        assert all(b >= a for a, b in zip(ratios, ratios[1:])), (changed_at, ratios)
        assert ratios[-1] == 0.4  # the target is still reached exactly at the new T
        # unchanged before the change
        assert lrs[:changed_at] == [lr_at(old, e) for e in range(changed_at)]


def test_ratio_reached_is_kept_when_t_grows():
    # ASFP T 10 -> 100 after 5 epochs: P_old(5) ~ 0.39 but P_new(6) ~ 0.13; the floor holds it
    old, new, _, ratios = steered("asfp", 10, 5, 100)
    assert new.pruning.ratio_reached == pytest.approx(S.asymptotic(5, 10, 0.4))
    assert ratios[6] == new.pruning.ratio_reached > S.asymptotic(6, 100, 0.4)


def test_changes_without_t_set_no_floor():
    old = RunConfig().with_changes(training={"epochs": 10})
    new = validate_changes(old, {"pruning": {"prune_ratio": 0.2}}, 5)
    assert new.pruning.ratio_reached == 0 and new.training.lr_decays_reached == 0


@pytest.mark.parametrize("d", [0.72, 0.73, 0.74, 0.7499])
def test_a_d_near_the_limit_is_accepted_during_a_run(d):
    old = RunConfig().with_changes(training={"epochs": 10})
    new = validate_changes(old, {"pruning": {"d": d}}, 3)
    assert new.pruning.d == d
    assert S.schedule_values("asymptotic", 10, 0.4, d)[-1] == 0.4


class ChangeAt:
    """A Control that queues changes[e] at the boundary after e completed epochs."""

    def __init__(self, changes):
        self.changes, self.now = changes, None

    def at_boundary(self, epochs_completed):
        self.now = epochs_completed
        return True

    def take_changes(self):
        return [self.changes[self.now]] if self.now in self.changes else []


def test_a_run_steered_to_d_073_and_more_epochs_keeps_its_progress():
    """issue 8: a slider change to D = 0.73 ended the run; a longer T raised the rate again."""
    from asfp_explorer.engine import EventKind, Trainer
    from support import tiny_config

    events = []
    cfg = tiny_config(training={"epochs": 3})
    control = ChangeAt({1: {"pruning": {"d": 0.73}}, 2: {"training": {"epochs": 6}}})
    trainer = Trainer(cfg, [events.append], control=control)
    assert trainer.run() == "finished"
    snaps = [e.data for e in events if e.kind is EventKind.EPOCH_END]
    assert [s.epoch for s in snaps] == list(range(7))
    lrs = [s.lr for s in snaps[1:]]
    ratios = [s.prune_ratio for s in snaps]
    assert all(b <= a for a, b in zip(lrs, lrs[1:])), lrs
    # D may lower the ratio (the user's choice); the change of T after 2 epochs may not
    assert all(b >= a for a, b in zip(ratios[2:], ratios[3:])), ratios
    assert ratios[2] == pytest.approx(S.asymptotic(2, 3, 0.4, 0.73))
    assert ratios[-1] == 0.4
    d_change, t_change = [e.data for e in events if e.kind is EventKind.PARAMETERS_CHANGED]
    assert d_change["config"]["pruning"]["d"] == 0.73
    assert t_change["config"]["training"]["lr_decays_reached"] == lr_decays_of(cfg, 1)
    assert t_change["config"]["pruning"]["ratio_reached"] == ratios[2]


def lr_decays_of(cfg, epoch):
    return sum(epoch >= m for m in cfg.training.milestone_epochs())
