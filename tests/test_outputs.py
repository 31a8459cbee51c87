"""Outputs researchers expect: CSV of metrics.jsonl, TensorBoard event files, figures as
PNG/SVG/PDF, percent in `show`, files that follow the umask, a CLI that starts without torch."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from asfp_explorer.cli import main
from support import one_thread


def run_cli(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (no second torch import): status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), one_thread():
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def metrics_lines(run_dir) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ CSV

def test_csv_holds_every_value_of_metrics_jsonl(finished_run_dir, tmp_path):
    target = tmp_path / "m.csv"
    status, out, _ = run_cli("show", str(finished_run_dir), "--csv", str(target))
    assert status == 0 and "wrote" in out
    rows = list(csv.DictReader(target.open(newline="")))
    lines = metrics_lines(finished_run_dir)
    assert len(rows) == len(lines)
    for row, m in zip(rows, lines):
        for key, value in m.items():
            cells = ({f"{key}/{k}": v for k, v in value.items()} if isinstance(value, dict)
                     else {key: value})
            for col, v in cells.items():
                if v is None:
                    assert row[col] == ""
                elif isinstance(v, bool):
                    assert row[col] == str(int(v))
                elif isinstance(v, (int, float)):
                    assert float(row[col]) == pytest.approx(v, rel=1e-12), col
    # the same table on standard output
    status, out, _ = run_cli("show", str(finished_run_dir), "--csv", "-")
    assert status == 0 and out == target.read_text()


def test_csv_of_runs_with_different_keys_leaves_cells_empty():
    from asfp_explorer.metrics_csv import metrics_csv_text

    text = metrics_csv_text([{"epoch": 0, "acc": 0.5}, {"epoch": 1, "dead": {"a": 3}}])
    assert list(csv.reader(io.StringIO(text))) == [["epoch", "acc", "dead/a"],
                                                   ["0", "0.5", ""], ["1", "", "3"]]


# ------------------------------------------------------------------ show in percent

def test_show_prints_percent_like_the_figures(finished_run_dir):
    status, out, _ = run_cli("show", str(finished_run_dir))
    summary = json.loads((finished_run_dir / "summary.json").read_text())
    table = dict(re.match(r"(.*?)\s{2,}(.*)$", line).groups()
                 for line in out.splitlines() if "  " in line)
    assert status == 0
    assert table["final test acc masked"] == f"{100 * summary['final_test_acc_masked']:.2f} %"
    assert table["exact macs reduction"] == f"{100 * summary['exact_macs_reduction']:.2f} %"
    assert table["target prune ratio"] == "40.00 %"
    # --json keeps the fractions of the records
    status, out, _ = run_cli("show", str(finished_run_dir), "--json")
    assert json.loads(out)["final test acc masked"] == summary["final_test_acc_masked"]


# ------------------------------------------------------------------ TensorBoard

def test_tensorboard_event_file_holds_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    status, _, err = run_cli("train", "--epochs", "2", "--batch-size", "128", "--device", "cpu",
                             "--out", str(tmp_path / "run"), "--quiet",
                             "--tensorboard", str(tmp_path / "tb"))
    assert status == 0, err
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    lines = metrics_lines(tmp_path / "run")
    got = {e.step: e.value for e in acc.Scalars("accuracy/test_masked_pct")}
    want = {m["epoch"]: 100 * m["test_acc_masked"] for m in lines
            if m["test_acc_masked"] is not None}
    assert set(got) == set(want)
    assert all(got[k] == pytest.approx(want[k], rel=1e-5) for k in want)
    lr = {e.step: e.value for e in acc.Scalars("training/lr")}
    assert lr == {m["epoch"]: pytest.approx(m["lr"], rel=1e-6) for m in lines}
    assert "config" in acc.Tags()["tensors"] or "config/text_summary" in acc.Tags()["tensors"]


def test_tensorboard_missing_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    status, _, err = run_cli("train", "--epochs", "1", "--out", str(tmp_path / "run"),
                             "--quiet", "--tensorboard", str(tmp_path / "tb"))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "asfp-explorer[tensorboard]" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ------------------------------------------------------------------ figures as files

@pytest.fixture(scope="module")
def image_export_works(tmp_path_factory) -> bool:
    """kaleido installed and able to find a browser to render with."""
    from asfp_explorer.viz.image_export import FigureExportError, kaleido_available, save_figure

    if not kaleido_available():
        pytest.skip("kaleido is not installed (pip install 'asfp-explorer[figures]')")
    import plotly.graph_objects as go

    try:
        save_figure(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])),
                    tmp_path_factory.mktemp("probe") / "probe.png")
    except FigureExportError as e:
        pytest.skip(f"kaleido cannot render here: {e}")
    return True


def test_report_and_compare_save_png_svg_pdf(image_export_works, finished_run_dir, tmp_path):
    status, out, err = run_cli("report", str(finished_run_dir), "--html",
                               str(tmp_path / "r.html"), "--figures", str(tmp_path / "f"),
                               "--format", "png")
    assert status == 0, err
    pngs = sorted((tmp_path / "f").glob("*.png"))
    assert [p.name.rsplit("-", 1)[1] for p in pngs] == ["diagnostics.png", "layers.png",
                                                       "run.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for fmt, magic in (("svg", b"<svg"), ("pdf", b"%PDF")):
        status, _, err = run_cli("compare", str(finished_run_dir), "--figures",
                                 str(tmp_path / fmt), "--format", fmt)
        assert status == 0, err
        files = sorted((tmp_path / fmt).iterdir())
        assert [p.name for p in files] == [f"compare-compare.{fmt}",
                                           f"compare-diagnostics.{fmt}"]
        assert all(magic in p.read_bytes()[:200] for p in files)


def test_figures_without_kaleido_is_one_line(monkeypatch, finished_run_dir, tmp_path):
    import asfp_explorer.viz.image_export as image_export

    monkeypatch.setattr(image_export, "kaleido_available", lambda: False)
    status, _, err = run_cli("compare", str(finished_run_dir), "--figures", str(tmp_path / "f"))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "kaleido" in err and "asfp-explorer[figures]" in err
    assert not (tmp_path / "f").exists()


# ------------------------------------------------------------------ file modes, start-up

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    from asfp_explorer.store.files import atomic_write_bytes

    before = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "f.json", b"{}")
        with open(tmp_path / "plain", "w"):
            pass  # what open() makes under the same umask: the reference
    finally:
        os.umask(before)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == \
        (tmp_path / "plain").stat().st_mode & 0o777 == 0o666 & ~umask


def test_cli_parser_is_built_without_heavy_imports():
    """Every subcommand's --help must not pay for torch, plotly or widgets (lazy imports)."""
    code = ("import sys; from asfp_explorer.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'plotly', 'ipywidgets', 'numpy') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
