"""The diagnostics figure: dead filters, the BN kick, the accuracy gap, realised ratio.

References are computed here by plain loops over the records; the same figure must come from
a live run, the stored run and a run still being written; runs recorded before the keys
existed say "not recorded".
"""

from __future__ import annotations

import json
import shutil
import statistics

import numpy as np
import pytest

from asfp_explorer.store import RunData, load_run
from asfp_explorer.viz.diagnostics import (
    DIAGNOSTIC_KEYS,
    DIAGNOSTIC_PANELS,
    NOT_RECORDED,
    compare_diagnostics_figure,
    diagnostics_figure,
)
from support import EventLog, one_thread, tiny_config

LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2"]


def fake_run(seed: int = 0, epochs: int = 4, with_keys: bool = True) -> RunData:
    """A RunData with random but consistent diagnostics records (None where the engine
    writes null: epoch 0, layers without pruned filters)."""
    rng = np.random.default_rng(seed)
    run = RunData(config={"training": {"epochs": epochs, "seed": seed},
                          "pruning": {"method": "sfp"}},
                  info={"layer_names": LAYERS, "layer_sizes": [16, 16, 32],
                        "dense_macs": 10_000})
    pruned_before = {n: 0 for n in LAYERS}
    for e in range(epochs + 1):
        pruned = {n: int(rng.integers(0, 8)) for n in LAYERS}
        m = {"epoch": e, "total_epochs": epochs, "prune_ratio": 0.4, "masks_updated": True,
             "test_acc_unmasked": None if e == 0 else float(rng.uniform(0.5, 0.9)),
             "test_acc_masked": float(rng.uniform(0.1, 0.5)), "pruned": pruned,
             "revived": {n: 0 for n in LAYERS}, "revived_total": int(rng.integers(0, 5)),
             "pruned_total": sum(pruned.values()), "exact_macs": 6000, "paper_macs": 5000.0}
        if with_keys:
            dead = {n: int(rng.integers(0, pruned_before[n] + 1)) for n in LAYERS}
            m.update(
                realised_ratio=sum(pruned.values()) / 64, dead=dead,
                dead_total=sum(dead.values()),
                pruned_norm_median={n: (None if pruned_before[n] == 0
                                        else float(rng.uniform(0, 50))) for n in LAYERS},
                kept_norm_median={n: float(rng.uniform(0.5, 2)) for n in LAYERS},
                acc_gap=(None if m["test_acc_unmasked"] is None
                         else m["test_acc_unmasked"] - m["test_acc_masked"]))
        run.metrics.append(m)
        pruned_before = pruned
    return run


def traces(fig, panel) -> list:
    """The traces of one diagnostics panel, by its position in DIAGNOSTIC_PANELS."""
    start = sum(len(p.traces()) for p in DIAGNOSTIC_PANELS[:DIAGNOSTIC_PANELS.index(panel)])
    return list(fig.data[start:start + len(panel.traces())])


def panel(name: str):
    return next(p for p in DIAGNOSTIC_PANELS if p.title.startswith(name))


def test_dead_map_is_dead_over_previously_pruned_per_layer():
    run = fake_run()
    fig, _ = diagnostics_figure(run)
    (heat,) = traces(fig, panel("Dead filters"))
    z = np.array(heat.z, dtype=float)
    for j, m in enumerate(run.metrics):
        for i, name in enumerate(LAYERS):
            before = run.metrics[j - 1]["pruned"][name] if j > 0 else 0
            if before == 0:
                assert np.isnan(z[i, j])
            else:
                assert z[i, j] == pytest.approx(m["dead"][name] / before, abs=1e-4)
            assert list(heat.customdata[i][j]) == [m["dead"][name], before]


def test_totals_norms_gap_and_ratio_follow_the_records():
    run = fake_run(seed=3)
    fig, _ = diagnostics_figure(run)
    before, dead, revived = traces(fig, panel("Filters pruned at the previous mask"))
    assert list(dead.y) == [m["dead_total"] for m in run.metrics]
    assert list(revived.y) == [m["revived_total"] for m in run.metrics]
    assert list(before.y) == [0] + [m["pruned_total"] for m in run.metrics[:-1]]

    pruned_line, kept_line = traces(fig, panel("BN kick: filter"))
    for j, m in enumerate(run.metrics):
        p = [v for v in m["pruned_norm_median"].values() if v is not None]
        k = [v for v in m["kept_norm_median"].values() if v is not None]
        if p:
            assert pruned_line.y[j] == pytest.approx(statistics.median(p), rel=1e-6)
        else:
            assert np.isnan(pruned_line.y[j])
        assert kept_line.y[j] == pytest.approx(statistics.median(k), rel=1e-6)

    (kick,) = traces(fig, panel("BN kick per layer"))
    m = run.metrics[2]
    for i, name in enumerate(LAYERS):
        p, k = m["pruned_norm_median"][name], m["kept_norm_median"][name]
        want = np.nan if p is None else np.clip(np.log10(p / k) if p > 0 else -np.inf, -2, 2)
        assert np.allclose(kick.z[i][2], want, atol=1e-3, equal_nan=True)

    (gap,) = traces(fig, panel("Accuracy lost"))
    for j, m in enumerate(run.metrics):
        if m["acc_gap"] is None:
            assert np.isnan(gap.y[j])
        else:
            assert gap.y[j] == pytest.approx(100 * (m["test_acc_unmasked"] - m["test_acc_masked"]),
                                             rel=1e-5)
    scheduled, realised = traces(fig, panel("Prune ratio"))
    assert list(realised.y) == pytest.approx([100 * m["realised_ratio"] for m in run.metrics])
    assert all(not t.endswith(NOT_RECORDED) for t in (a.text for a in fig.layout.annotations))


def test_runs_without_the_keys_say_not_recorded():
    old = fake_run(with_keys=False)
    assert not any(k in m for m in old.metrics for k in DIAGNOSTIC_KEYS)
    fig, _ = diagnostics_figure(old)
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == len(DIAGNOSTIC_PANELS) and all(t.endswith(NOT_RECORDED) for t in titles)
    for p in DIAGNOSTIC_PANELS[:-1]:  # nothing drawn (the scheduled ratio is still known)
        assert all(len(t.x) == 0 for t in traces(fig, p))
    # an empty run (before the start) draws without a "not recorded" claim
    empty, _ = diagnostics_figure(RunData())
    assert not any(a.text.endswith(NOT_RECORDED) for a in empty.layout.annotations)
    # compare: old and new runs together; the panels with data say nothing
    cmp = compare_diagnostics_figure([old, fake_run(seed=1)])
    assert not any(a.text.endswith(NOT_RECORDED) for a in cmp.layout.annotations)
    cmp = compare_diagnostics_figure([old])
    assert all(a.text.endswith(NOT_RECORDED) for a in cmp.layout.annotations)


def test_compare_averages_seeds():
    a, b = fake_run(seed=1), fake_run(seed=2)
    fig = compare_diagnostics_figure([a, b])
    line = next(t for t in fig.data if t.mode == "lines+markers")  # dead total, the mean
    want = [(x["dead_total"] + y["dead_total"]) / 2 for x, y in zip(a.metrics, b.metrics)]
    assert list(line.y) == pytest.approx(want)


@pytest.fixture(scope="module")
def sfp_run(tmp_path_factory):
    """A real 3-epoch SFP run: its directory and the events a live view saw."""
    from asfp_explorer.engine import RunHandle

    out = tmp_path_factory.mktemp("diag") / "sfp"
    log = EventLog()
    with one_thread():
        handle = RunHandle(tiny_config(pruning={"method": "sfp"}), out, [log])
        handle.run()
    return out, handle.recorder.run, log.events


def _json(fig) -> dict:
    return json.loads(fig.to_json())


def test_live_stored_and_growing_runs_draw_the_same(sfp_run, tmp_path):
    out, live, _ = sfp_run
    stored = load_run(out)
    assert _json(diagnostics_figure(live)[0]) == _json(diagnostics_figure(stored)[0])

    growing = tmp_path / "growing"  # a run still being written: two epochs on disk so far
    shutil.copytree(out, growing)
    lines = (growing / "metrics.jsonl").read_text().splitlines(keepends=True)
    (growing / "metrics.jsonl").write_text("".join(lines[:2]))
    (growing / "summary.json").write_text(json.dumps({"status": "running"}))
    partial = load_run(growing)
    assert len(partial.metrics) == 2
    head = RunData(config=live.config, info=live.info, metrics=live.metrics[:2],
                   norms=live.norms[:2], masks=live.masks[:2])
    assert _json(diagnostics_figure(partial)[0])["data"] == \
        _json(diagnostics_figure(head)[0])["data"]


def test_sfp_shows_dead_filters_from_its_first_mask(sfp_run):
    """SFP masks before any training (BN beta = 0): some zeroed filters never move again."""
    _, live, _ = sfp_run
    (heat,) = traces(diagnostics_figure(live)[0], panel("Dead filters"))
    z = np.array(heat.z, dtype=float)
    assert np.all(np.isnan(z[:, 0]))  # nothing was pruned before epoch 0
    assert np.nanmax(z[:, 1]) == 1.0  # a layer whose every pruned filter stayed zero


def test_dashboard_pane_draws_live_and_replayed_runs_alike(sfp_run):
    from asfp_explorer.viz.dashboard import Dashboard

    out, _, events = sfp_run
    dash = Dashboard(tiny_config(pruning={"method": "sfp"}), refresh_hz=0, fvcore=False)
    assert dash.diagnostics.figure is None  # closed: no second widget yet
    for e in events[: len(events) // 2]:
        dash._observe(e)
    dash.refresh()
    dash.diagnostics.widget.selected_index = 0  # the user opens the accordion
    assert dash.diagnostics.figure is not None
    for e in events[len(events) // 2:]:
        dash._observe(e)
    dash.refresh()  # the open pane follows on the dashboard's own refresh
    replay = Dashboard.replay(out)
    replay.diagnostics.widget.selected_index = 0
    want = _json(diagnostics_figure(load_run(out))[0])["data"]
    assert _json(dash.diagnostics.figure)["data"] == want
    assert _json(replay.diagnostics.figure)["data"] == want


def test_report_and_compare_pages_carry_the_diagnostics(sfp_run, tmp_path):
    from asfp_explorer.viz.compare import compare_html, report_html

    out, _, _ = sfp_run
    page = report_html(out, tmp_path / "r.html").read_text()
    assert "Diagnostics" in page and "Dead filters" in page
    page = compare_html([out, out], tmp_path / "c.html").read_text()
    assert "Diagnostics" in page and "Accuracy lost to the mask" in page
