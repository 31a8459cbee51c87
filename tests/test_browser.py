"""The tutorial in a real browser: JupyterLab from the venv, Debian's Chromium via Playwright.

Runs all cells, waits until the plots hold data, moves a schedule slider and checks that the
schedule plot follows; screenshots go to test-artifacts/browser/. Skips only where Chromium
cannot be found. Everything listens on 127.0.0.1 with a random port and a token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()),
                None)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EPOCHS = "2"

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install "
                                                          "chromium); the browser test needs it")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a copy of the tutorial, isolated from the user's Jupyter dirs."""
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "tutorial.ipynb", work / "tutorial.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "ASFP_TUTORIAL_EPOCHS": EPOCHS}
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR"):
        env[var] = str(tmp_path / var.lower())
    # No "Jupyter news?" question over the page, no update check.
    settings = tmp_path / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    jupyter = Path(sys.executable).with_name("jupyter-lab")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [str(jupyter), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
         "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--ServerApp.port_retries=0", "--ServerApp.terminals_enabled=False"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.3)
        yield base, token, work
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# JavaScript run in the page: plotly keeps each plot's traces on its div as `.data`.
PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
    traces: (gd.data || []).length,
    points: (gd.data || []).map(t => (t.y ? t.y.length : (t.z ? t.z.length : 0))),
}))"""
SCHEDULE_Y_JS = """() => { const gd = document.querySelector('.js-plotly-plot');
    return gd && gd.data && gd.data[0] ? Array.from(gd.data[0].y) : null; }"""


def _shot(page, name: str, locator=None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    (locator or page).screenshot(path=str(path))
    return path


def test_tutorial_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    base, token, work = lab
    received = {"frames": 0, "bytes": 0}
    t_start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # Tall enough that one whole dashboard fits for its screenshot.
        page = browser.new_page(viewport={"width": 1400, "height": 1500})

        def on_ws(ws):
            def count(payload):
                received["frames"] += 1
                received["bytes"] += len(payload)
            ws.on("framereceived", count)

        page.on("websocket", on_ws)
        page.goto(f"{base}/lab/tree/tutorial.ipynb?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        # Kernel ready: the status bar says Idle.
        page.wait_for_selector("text=| Idle", timeout=60_000)

        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")

        # The last cell writes the report once every run has finished.
        page.wait_for_selector("text=wrote runs/tutorial/asfp/report.html", timeout=240_000)
        plots = page.evaluate(PLOTS_JS)
        dashboards = [pl for pl in plots if pl["traces"] == 18]
        assert len(dashboards) == 3, plots
        for d in dashboards:
            assert d["points"][4] >= int(EPOCHS) + 1  # accuracy: epochs 0..T
            assert d["points"][0] >= int(EPOCHS) + 1  # schedule
        assert len(plots) >= 4  # and the comparison figure

        figs = page.locator(".jp-OutputArea-output:has(.js-plotly-plot)")
        _shot(page, "01-asfp-dashboard.png", figs.nth(0))
        _shot(page, "02-sfp-dashboard.png", figs.nth(1))
        _shot(page, "03-hard-asfp-dashboard.png", figs.nth(2))
        _shot(page, "04-compare.png", page.locator(".js-plotly-plot").nth(3))

        # Move the first dashboard's "target P" slider by typing into its readout.
        before = page.evaluate(SCHEDULE_Y_JS)
        slider = page.locator(".widget-slider:has(label:text-is('target P'))").first
        slider.scroll_into_view_if_needed()
        readout = slider.locator(".widget-readout")
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("0.2")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => { const gd = document.querySelector('.js-plotly-plot');"
            " const y = gd.data[0].y; return Math.abs(y[y.length - 1] - 20) < 1e-3; }",
            timeout=20_000)
        after = page.evaluate(SCHEDULE_Y_JS)
        assert before[-1] == pytest.approx(40.0) and after[-1] == pytest.approx(20.0)
        _shot(page, "05-asfp-after-slider.png", figs.nth(0))
        text = page.locator(".widget-html-content:has-text('at P = 20 %')")
        assert text.count() >= 1  # the FLOPs prediction followed the slider too
        browser.close()
    seconds = time.monotonic() - t_start
    (ARTIFACTS / "traffic.json").write_text(json.dumps({**received, "seconds": seconds}))
    print(f"\nbrowser test: {seconds:.0f} s; websocket frames received {received['frames']}, "
          f"{received['bytes'] / 1e6:.1f} MB")
