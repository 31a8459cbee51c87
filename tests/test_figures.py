"""Figures from stored runs, without a browser: right data, same for live and stored runs."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from asfp_explorer.schedules import schedule_values
from asfp_explorer.store import RunData, load_run
from asfp_explorer.viz import figures as F
from asfp_explorer.viz.compare import compare_figure, compare_html, group_runs, report_html


def _data(fig: go.Figure) -> list[dict]:
    """Trace data as plain JSON (numpy arrays included), for comparing figures."""
    return json.loads(fig.to_json())["data"]


def test_dashboard_figure_has_every_panel_filled(viz_runs):
    run = load_run(viz_runs["asfp"])
    fig, layout = F.dashboard_figure(run)
    assert len(fig.data) == sum(len(p.traces()) for p in F.PANELS) == 18
    n_epochs = len(run.metrics)  # epochs 0..3
    sched, acc, flops, norms, layer_mask, net = (fig.data[s] for s in layout.slices)
    assert len(sched[0].x) == 3 + 1 and sched[0].y[-1] == pytest.approx(40.0)
    assert list(sched[2].y) == pytest.approx([100 * m["prune_ratio"] for m in run.metrics])
    assert len(acc[0].y) == n_epochs and np.isnan(acc[1].y[0])  # no unmasked eval at epoch 0
    assert flops[0].y[0] == pytest.approx(run.info["dense_macs"])
    assert list(flops[2].y) == pytest.approx([m["exact_macs"] for m in run.metrics], rel=1e-6)
    width = run.info["layer_sizes"][0]
    assert np.sum(norms[0].y) + np.sum(norms[1].y) == width
    assert np.sum(norms[1].y) == run.metrics[-1]["pruned"][run.layer_names[0]]
    assert np.asarray(layer_mask[0].z).shape == (width, n_epochs)
    assert np.asarray(net[0].z).shape == (len(run.layer_names), n_epochs)
    # MACs are labelled with their unit somewhere a reader sees it.
    assert "MACs" in fig.layout[layout.axes[2]["y"]].title.text


def test_live_record_and_stored_run_draw_the_same_figure(viz_runs):
    live = RunData()
    for event in viz_runs["asfp_events"]:
        live.apply(event)
    stored = load_run(viz_runs["asfp"])
    a, _ = F.dashboard_figure(live)
    b, _ = F.dashboard_figure(stored)
    assert _data(a) == _data(b)
    assert json.loads(a.to_json())["layout"] == json.loads(b.to_json())["layout"]


def test_filling_in_place_equals_building_afresh(viz_runs):
    """The live path (build empty, then `fill`) and the static path give the same figure."""
    run = load_run(viz_runs["asfp"])
    empty, layout = F.dashboard_figure(RunData(), F.View(plan=F.Plan.of_run(run)))
    F.fill(empty, layout, F.PANELS, run, F.View())
    fresh, _ = F.dashboard_figure(run)
    assert _data(empty) == _data(fresh)


def test_layer_mask_matrix_matches_a_plain_loop(viz_runs):
    run = load_run(viz_runs["asfp"])
    for li in range(len(run.layer_names)):
        z = F.layer_mask_matrix(run, li)
        for f in range(z.shape[0]):
            for e in range(z.shape[1]):
                kept = bool(run.masks[e][li][f])
                before = bool(run.masks[e - 1][li][f]) if e > 0 else True
                want = 0 if not kept else (2 if not before else 1)
                assert z[f, e] == want


def test_revivals_in_the_network_panel_match_the_metrics(viz_runs):
    run = load_run(viz_runs["sfp0"])
    _, revived = F.network_mask_data(run, F.View())
    total = sum(m["revived_total"] for m in run.metrics)
    assert sum(int(t) for t in revived["text"]) == total
    assert total > 0  # soft pruning at a constant ratio revives filters in 3 epochs


def test_norm_threshold():
    norms = np.array([0.1, 0.2, 0.9, 1.0])
    assert F.norm_threshold(norms, np.array([False, False, True, True])) == pytest.approx(0.55)
    assert F.norm_threshold(norms, np.array([True, False, True, False])) is None  # overlap
    assert F.norm_threshold(norms, np.ones(4, bool)) is None  # nothing pruned


def test_threshold_separates_l2_masks_at_every_mask_update(viz_runs):
    run = load_run(viz_runs["sfp0"])
    for m, norms, masks in zip(run.metrics, run.norms, run.masks):
        if m["masks_updated"]:
            for n, k in zip(norms, masks):
                if (~k).any():
                    assert F.norm_threshold(n.astype(float), k) is not None


def test_schedule_figure_previews_a_plan_without_a_run():
    fig = F.schedule_figure(plan=F.Plan("asfp", 0.3, 0.125, 100))
    want = 100 * np.array(schedule_values("asymptotic", 100, 0.3, 0.125))
    assert np.allclose(fig.data[0].y, want, atol=1e-4)
    assert list(fig.data[1].y) == pytest.approx([30.0, 30.0])
    assert len(fig.data[2].x) == 0  # nothing applied yet


def test_schedule_refuses_d_without_solution_in_one_line():
    with pytest.raises(ValueError) as e:
        F.Plan("asfp", 0.4, 0.8, 10).values()
    assert "\n" not in str(e.value) and "0.75" in str(e.value)


def test_every_single_panel_figure_builds(viz_runs):
    run = load_run(viz_runs["hard"])
    figs = [F.schedule_figure(run), F.accuracy_figure(run), F.flops_figure(run, {3: 123}),
            F.norms_figure(run, run.layer_names[-1], epoch=1), F.layer_mask_figure(run),
            F.network_mask_figure(run), F.layer_explorer_figure(run)]
    assert all(isinstance(f, go.Figure) and f.data for f in figs)
    assert list(figs[2].data[3].y) == [123]
    assert "epoch 1" in figs[3].layout.annotations[0].text
    explorer = figs[-1]
    menu = explorer.layout.updatemenus[0]
    assert [b.label for b in menu.buttons] == run.layer_names
    assert sum(bool(t.visible) for t in explorer.data) == 4  # one layer's traces at a time


def test_grouping_puts_seeds_together(viz_runs):
    groups = group_runs([viz_runs[k] for k in ("asfp", "sfp0", "sfp1", "hard")])
    assert [len(g.runs) for g in groups] == [1, 2, 1]
    assert groups[1].label == "method=sfp (n=2)"
    x, mean, std = groups[1].stack("test_acc_masked", 100)
    a = [100 * m["test_acc_masked"] for m in groups[1].runs[0].metrics]
    b = [100 * m["test_acc_masked"] for m in groups[1].runs[1].metrics]
    assert mean == pytest.approx((np.array(a) + np.array(b)) / 2)
    assert std == pytest.approx(np.abs(np.array(a) - np.array(b)) / 2)


def test_compare_figure_draws_bands_for_groups(viz_runs):
    fig = compare_figure([viz_runs[k] for k in ("asfp", "sfp0", "sfp1")])
    bands = [t for t in fig.data if getattr(t, "fill", None) == "toself"]
    assert len(bands) == 4  # one mean ± std band per per-epoch panel, for the sfp group only
    assert any(t.type == "table" for t in fig.data)


def _assert_self_contained(text: str) -> None:
    assert "<!doctype html>" in text.lower()
    # plotly.js inline: no script loaded from anywhere.
    assert not re.search(r"<script[^>]+src=", text)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000


def test_report_html_is_self_contained(viz_runs, tmp_path):
    path = report_html(viz_runs["asfp"], tmp_path / "sub" / "r.html", fvcore_macs={1: 5})
    _assert_self_contained(path.read_text())


def test_compare_html_is_self_contained(viz_runs, tmp_path):
    path = compare_html([viz_runs["sfp0"], viz_runs["sfp1"]], tmp_path / "c.html")
    _assert_self_contained(path.read_text())


def _cli(module, argv):
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_and_compare_commands(viz_runs, tmp_path, capsys):
    from asfp_explorer.commands import compare, report

    assert _cli(report, ["report", str(viz_runs["asfp"]), "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 3_000_000
    assert _cli(compare, ["compare", str(viz_runs["sfp0"]), str(viz_runs["sfp1"]),
                          str(viz_runs["asfp"]), "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "method=sfp (n=2)" in out and (tmp_path / "c.html").exists()
    (tmp_path / "a_file").write_text("")
    nowhere = str(tmp_path / "a_file" / "x.html")  # its "folder" is a file
    assert _cli(report, ["report", str(viz_runs["asfp"]), "--html", nowhere]) == 2
    assert _cli(compare, ["compare", str(viz_runs["asfp"]), "--html", nowhere]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--html: cannot write" in line for line in err)


def test_fvcore_count_of_the_compact_model_equals_the_exact_count(viz_runs):
    from asfp_explorer.viz.compact_macs import compact_conv_macs

    run = load_run(viz_runs["asfp"])
    seen = set()
    for m, masks in zip(run.metrics, run.masks):
        key = tuple(int(x.sum()) for x in masks)
        if key in seen:
            continue
        seen.add(key)
        assert compact_conv_macs(run.config, run.info, masks) == m["exact_macs"]
    assert len(seen) >= 2  # ASFP: at least the dense start and one pruned state
