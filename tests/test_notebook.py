"""The tutorial executes headless (nbclient) under a short configuration, with no error output."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "notebooks" / "tutorial.ipynb"


def test_tutorial_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(TUTORIAL, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_tutorial_runs_headless(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # A copy in a scratch folder: the notebook writes runs/ next to itself, and the real
    # data/ folder must not change the choice of data set under test.
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(TUTORIAL, work / "tutorial.ipynb")
    monkeypatch.setenv("ASFP_TUTORIAL_EPOCHS", "2")
    nb = nbformat.read(work / "tutorial.ipynb", as_version=4)
    t0 = time.monotonic()
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    seconds = time.monotonic() - t0
    print(f"\ntutorial executed in {seconds:.0f} s")
    problems = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                problems.append(f"cell {i} stderr: {out.text[:300]}")
    assert not problems, "\n".join(problems)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "Using digits" in text and "runs: finished, finished, finished" in text
    assert (work / "runs" / "tutorial" / "asfp" / "report.html").exists()
    # The dashboards and the comparison were displayed as widgets / a plotly figure.
    mimes = {m for c in nb.cells for o in c.get("outputs", []) for m in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in mimes
    assert any("plotly" in m for m in mimes)
