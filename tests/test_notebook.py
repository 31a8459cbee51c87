"""The tutorial executes headless (nbclient) under a short configuration, with no error output;
the README's Python block runs top to bottom and leaves a clean run directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "notebooks" / "tutorial.ipynb"
PRESET = "tutorial_preset()"
# Appended to the copy: the tutorial's cells only queue runs; the test waits for them here.
WAIT_CELL = """assert asfp.queue.wait(900), "the queued runs did not end"
print("runs:", ", ".join(d.handle.status for d in (asfp, sfp, hard, mine)))
print("queue errors:", asfp.queue.errors)"""


def test_tutorial_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(TUTORIAL, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_the_first_code_cell_is_one_preset_call():
    import nbformat

    nb = nbformat.read(TUTORIAL, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code").source
    statements = [ln for ln in first.splitlines() if ln.strip() and not ln.startswith(("from ", "import "))]
    assert PRESET in first and len(statements) <= 2, first
    assert "environ" not in first and "socket" not in first


def test_the_preset_says_what_it_chose_and_why(capsys, tmp_path):
    from asfp_explorer.config import ConfigError
    from asfp_explorer.presets import tutorial_preset

    config = tutorial_preset(device="cpu", data_dir=tmp_path)
    line = capsys.readouterr().out
    assert config.data.name == "digits" and config.training.device == "cpu"
    assert "digits (offline and fast on a CPU)" in line and "20 epochs" in line
    config = tutorial_preset(dataset="cifar10", device="cpu", epochs=3, data_dir=tmp_path)
    assert config.data.path == str(tmp_path) and config.training.epochs == 3
    with pytest.raises(ConfigError, match="dataset: 'mnist'"):
        tutorial_preset(dataset="mnist")


@pytest.mark.slow
def test_tutorial_runs_headless(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    # A copy in a scratch folder: the notebook writes runs/ next to its project root (here the
    # scratch folder), and the real data/ folder must not change the choice of data set.
    work = tmp_path / "nb"
    work.mkdir()
    nb = nbformat.read(TUTORIAL, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source = first.source.replace(PRESET, "tutorial_preset(device='cpu', epochs=2)")
    nb.cells.append(nbformat.v4.new_code_cell(WAIT_CELL))
    t0 = time.monotonic()
    NotebookClient(nb, timeout=900, kernel_name="python3",
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
    assert "Using digits" in text
    assert "runs: finished, finished, finished, finished" in text
    assert "queue errors: []" in text
    runs = work / "runs" / "tutorial"
    assert (runs / "asfp" / "report.html").exists()
    assert (runs / "asfp" / "export" / "export.json").exists()
    assert (runs / "my-cnn" / "metrics.jsonl").exists()
    # No cell waited: every cell before the appended one returned while runs were queued.
    assert "inactive until" not in text
    # The dashboards were displayed as widgets.
    mimes = {m for c in nb.cells for o in c.get("outputs", []) for m in o.get("data", {})}
    assert "application/vnd.jupyter.widget-view+json" in mimes


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has a ```python block"
    return blocks[0]


@pytest.mark.slow
def test_readme_python_block_runs_top_to_bottom(tmp_path):
    """As a user would paste it into a script: it finishes, prints the change's epoch and the
    ratios, and leaves no temporary or lock files in the run directory."""
    code = _readme_python()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    first = int(re.search(r"applies from epoch (\d+)", lines[0]).group(1))
    assert lines[1] == "finished"
    ratios = [float(x) for x in lines[2].strip("[]").split(",")]
    assert len(ratios) == 6 and ratios[-1] == 0.5  # asfp reaches the new target at T = 5
    run = tmp_path / "runs" / "demo"
    from asfp_explorer.store import load_run

    change = load_run(run).events[0]
    assert change["changes"] == {"pruning": {"prune_ratio": 0.5}}
    assert change["epoch"] + 1 == first  # the run applied it where the line said
    leftovers = [p.name for p in run.rglob("*") if p.name == "lock" or ".tmp" in p.name]
    assert leftovers == []
    shutil.rmtree(run)
