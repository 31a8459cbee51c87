"""Property-based fuzzing of every entry point that takes user input.

No input may end in a traceback from deep inside torch, a NaN, or a silently wrong run: each
either validates into a sane configuration or is refused with one line naming the field.
"""

from __future__ import annotations

import io
import math
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asfp_explorer import schedules
from asfp_explorer.cli import build_parser, main
from asfp_explorer.commands.train import config_from_args
from asfp_explorer.config import ConfigError, RunConfig
from asfp_explorer.data import DataError, load_npz

FIELDS = {
    "data": ["name", "path", "batch_size", "augment", "download", "train_subset"],
    "model": ["name"],
    "pruning": ["method", "prune_ratio", "d", "interval", "criterion", "fpgm_norm_share"],
    "training": ["epochs", "lr", "momentum", "nesterov", "weight_decay", "lr_gamma",
                 "lr_milestones", "device", "seed"],
}
values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["asfp", "sfp", "l2", "fpgm", "resnet20", "digits", "cuda", "cpu", "npz"]),
    st.lists(st.floats(-2, 2), max_size=3),
)
config_dicts = st.dictionaries(
    st.sampled_from(list(FIELDS) + ["extra"]),
    st.dictionaries(st.sampled_from(sum(FIELDS.values(), []) + ["bogus"]), values, max_size=4),
    max_size=4,
)


def check_valid(c: RunConfig) -> None:
    p = c.pruning
    assert 0 <= p.prune_ratio < 1 and 0 < p.d < 0.75 and p.interval >= 1
    t = c.training
    assert t.epochs >= 1 and t.lr > 0 and math.isfinite(t.lr)
    values = schedules.schedule_values(p.schedule, min(t.epochs, 50), p.prune_ratio, p.d)
    assert all(0 <= v <= p.prune_ratio + 1e-12 and math.isfinite(v) for v in values)


@settings(max_examples=400, deadline=None)
@given(config_dicts)
def test_config_dicts_validate_or_fail_in_one_line(d):
    try:
        c = RunConfig.from_dict(d)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and ":" in msg
        return
    check_valid(c)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 400),
       st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(schedules.SCHEDULES))
@example(0.0, 1, 5e-324, "asymptotic")  # found by the fuzzer: a tiny D made P(0) NaN
@example(0.4, 3, 1e-300, "asymptotic")
def test_schedules_never_return_nan(p, t, d, name):
    try:
        vals = schedules.schedule_values(name, t, p, d)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    assert vals[-1] == p and all(0 <= v <= p + 1e-12 for v in vals)
    assert all(a <= b + 1e-15 for a, b in zip(vals, vals[1:]))


flag_values = st.one_of(st.from_regex(r"-?[0-9]{0,3}(\.[0-9]{0,3})?", fullmatch=True),
                        st.sampled_from(["nan", "inf", "-inf", "1e9", "abc", "", "0.75"]))
TRAIN_FLAGS = ["--ratio", "--epochs", "--d", "--interval", "--batch-size", "--lr", "--seed",
               "--method", "--criterion", "--model", "--dataset", "--device"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(TRAIN_FLAGS), flag_values), max_size=5))
def test_train_flags_validate_or_exit_2(pairs):
    argv = ["train"] + [x for pair in pairs for x in pair]
    err = io.StringIO()
    try:
        with redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit as e:
        assert e.code == 2 and len(err.getvalue().strip().splitlines()) == 1
        return
    try:
        check_valid(config_from_args(args))
    except ConfigError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["schedule", "flops"]),
       st.lists(st.tuples(st.sampled_from(["--ratio", "--epochs", "--d", "--method", "--model",
                                           "--convention", "--input-size"]), flag_values),
                max_size=3))
def test_schedule_and_flops_commands_exit_0_or_2(cmd, pairs):
    argv = [cmd] + [x for pair in pairs for x in pair]
    if cmd == "flops":  # keep fuzzing fast: small models and inputs only
        argv += ["--model", "resnet20"]
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert len(err.getvalue().strip().splitlines()) == 1
    else:
        assert "nan" not in out.getvalue().lower()


dtypes = st.sampled_from([np.uint8, np.int64, np.float32, np.int8, np.bool_])
shapes = st.lists(st.integers(0, 5), min_size=1, max_size=5).map(tuple)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "z"]),
                       st.tuples(shapes, dtypes), max_size=5), st.integers(0, 12))
def test_npz_archives_load_or_fail_in_one_line(tmp_path, arrays, label_max):
    rng = np.random.default_rng(0)
    data = {k: (rng.integers(-1, label_max + 1, size=s) if k.startswith("y")
                else rng.integers(0, 255, size=s)).astype(dt) for k, (s, dt) in arrays.items()}
    f = tmp_path / "fuzz.npz"
    np.savez(f, **data)
    try:
        d = load_npz(f)
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert d.x_train.dtype.is_floating_point is False and d.x_train.ndim == 4
    assert int(d.y_train.min()) >= 0 and int(d.y_train.max()) < d.num_classes
    assert len(d.y_train) == len(d.x_train) > 0 and len(d.y_test) == len(d.x_test) > 0
