"""The tutorial in a real browser: JupyterLab from the venv, Debian's Chromium via Playwright.

Runs all cells (the runs queue one after another, so the cells return at once) plus one more
cell that computes for a few seconds; while it (and the cells before it) run, presses Pause on
the ASFP dashboard, then waits for the paused confirmation: the click must reach the run while
it is still live, not after it ended. Then Stop. Then waits until every queued run, the
comparison and the report are done, checks the plots hold data, saves a PNG with the Save
button, moves a schedule slider, then saves the notebook, reloads the page and checks that
every figure is drawn again as it was, and that the slider still redraws the schedule. A second,
small notebook checks that a LiveFigure keeps updating after a reload, and a third that the
figures come back, and follow a slider, when the page is busy for seconds right after a
reload (the "model not found" race of jupyterlab-widgets, and anywidget's 2-s limit).
Screenshots go to test-artifacts/browser/. Skips only where Chromium cannot be found.
Everything listens on 127.0.0.1 with a random port and a token.
"""

from __future__ import annotations

import contextlib
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
EPOCHS = 3
ASFP_CELL = 'asfp = Dashboard(base.with_changes(pruning={"method": "asfp"})'
ASFP_EPOCHS = 12  # long enough to be live when the Pause click arrives on a loaded machine
# The notebook's own settings, made short for the test by editing the copy's preset call,
# and one more cell: a user's later computation that keeps the kernel busy for a while.
PRESET = "tutorial_preset()"
LATER_CELL = 'busy = sum(i * i for i in range(3_000_000)); print("later cell done")'

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (apt-get install "
                                                          "chromium); the browser test needs it")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _short_copy(src: Path, dst: Path) -> None:
    import nbformat

    nb = nbformat.read(src, as_version=4)
    preset = [c for c in nb.cells if c.cell_type == "code" and PRESET in c.source]
    assert len(preset) == 1, "the tutorial's first code cell calls tutorial_preset()"
    preset[0].source = preset[0].source.replace(PRESET, f"tutorial_preset(epochs={EPOCHS})")
    asfp = [c for c in nb.cells if c.cell_type == "code" and ASFP_CELL in c.source]
    assert len(asfp) == 1, "the tutorial builds the ASFP dashboard in one cell"
    asfp[0].source = asfp[0].source.replace(
        ASFP_CELL, ASFP_CELL[:-1] + f', training={{"epochs": {ASFP_EPOCHS}}})')
    nb.cells.append(nbformat.v4.new_code_cell(LATER_CELL))
    nbformat.write(nb, dst)


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a copy of the tutorial, isolated from the user's Jupyter dirs."""
    work = tmp_path / "lab"
    work.mkdir()
    _short_copy(ROOT / "notebooks" / "tutorial.ipynb", work / "tutorial.ipynb")
    with _lab_server(tmp_path, work) as server:
        yield server


@contextlib.contextmanager
def _lab_server(tmp_path: Path, work: Path):
    """JupyterLab serving `work`; yields (base url, token, work)."""
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                "JUPYTERLAB_WORKSPACES_DIR"):
        env[var] = str(tmp_path / var.lower())
    # No "Jupyter news?" question over the page, no update check.
    settings = tmp_path / "jupyterlab_settings_dir" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Every cell stays in the page: Lab's default windowing detaches cells scrolled out of
    # view, and the test reads dashboards all down the notebook.
    notebook = tmp_path / "jupyterlab_settings_dir" / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
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
        deadline = time.monotonic() + 180  # a loaded machine takes minutes
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("JupyterLab did not start:\n"
                                       + (tmp_path / "lab.log").read_text()[-2000:]) from None
                time.sleep(0.3)  # polling a server that is starting up, not synchronising
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
# Logs each websocket message over 1 MB with its arrival time since the socket opened. After a
# reload, jupyterlab-widgets asks for every widget's state in one message (and falls back to
# asking each widget when the answer takes more than 4 s); the test prints its size and time.
BIG_MESSAGES_JS = """(() => { const Native = window.WebSocket;
  class Logged extends Native {
    constructor(...args) {
      super(...args);
      const opened = performance.now();
      this.addEventListener('message', ev => {
        const n = ev.data.byteLength || ev.data.size || ev.data.length || 0;
        if (n > 1e6) console.log(`big message: ${(n / 1e6).toFixed(1)} MB after `
                                 + `${((performance.now() - opened) / 1e3).toFixed(2)} s`);
      });
    }
  }
  window.WebSocket = Logged;
})();"""
SCHEDULE_Y_JS = """() => { const gd = document.querySelector('.js-plotly-plot');
    return gd && gd.data && gd.data[0] ? Array.from(gd.data[0].y) : null; }"""


def _shot(page, name: str, locator=None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    (locator or page).screenshot(path=str(path))
    return path


def _one_cell_notebook(tmp_path: Path, name: str, source: str) -> Path:
    """A folder `lab` in `tmp_path` with `name`, a Python 3 notebook of one code cell."""
    import nbformat

    work = tmp_path / "lab"
    work.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, work / name)
    return work


def _open_notebook(p, base: str, token: str, name: str, height: int):
    """A Chromium page on notebook `name`, once its kernel is idle."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1200, "height": height})
    page.goto(f"{base}/lab/tree/{name}?token={token}")
    page.wait_for_selector("text=| Idle", timeout=60_000)
    return browser, page


def _run_all(page) -> None:
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")


def _save(page, path: Path) -> None:
    """Save the notebook and wait until the server has written its widget outputs."""
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 60
    while "widget-view+json" not in path.read_text():
        assert time.monotonic() < deadline, "the notebook was not saved"
        time.sleep(0.5)


def _set_target_p(page, value: float, failed_shot: str, console: list[str]) -> None:
    """Type `value` into the first dashboard's "target P" readout and wait until its schedule
    panel ends at value x 100 %."""
    slider = page.locator(".widget-slider:has(label:text-is('target P'))").first
    slider.scroll_into_view_if_needed()
    readout = slider.locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")
    try:
        page.wait_for_function(
            "() => { const gd = document.querySelector('.js-plotly-plot');"
            f" const y = gd.data[0].y; return Math.abs(y[y.length - 1] - {value * 100}) < 1e-3; }}",
            timeout=20_000)
    except Exception:
        _shot(page, failed_shot)
        (ARTIFACTS / "console.txt").write_text("\n".join(console))
        pytest.fail(f"the slider did not move the schedule: readout {readout.inner_text()!r},"
                    f" schedule {page.evaluate(SCHEDULE_Y_JS)}")


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
        console: list[str] = []  # the page's console, kept with the screenshots
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.add_init_script(BIG_MESSAGES_JS)
        try:
            page.goto(f"{base}/lab/tree/tutorial.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            # Kernel ready: the status bar says Idle.
            page.wait_for_selector("text=| Idle", timeout=60_000)

            _run_all(page)

            dashboards = page.locator(".widget-vbox:has(> .widget-html:has-text('ASFP explorer'))")
            asfp = dashboards.nth(0)
            # Pause while a later cell runs (it is queued or executing: "[*]").
            asfp.locator(".widget-html-content:has-text('training on')").wait_for(timeout=240_000)
            later = page.locator(".jp-CodeCell").last
            assert "[*]" in later.locator(".jp-InputPrompt").inner_text()
            asfp.locator("button:has-text('Pause')").click()
            asfp.locator(".widget-html-content:has-text('paused after epoch')").wait_for(
                timeout=120_000)  # the run was still live when the click arrived
            page.wait_for_selector("text=later cell done", timeout=60_000)
            _shot(page, "01-asfp-paused.png", asfp)
            assert asfp.locator("button:has-text('Resume')").is_enabled()
            asfp.locator("button:has-text('Stop')").click()
            asfp.locator(".widget-html-content:has-text('run stopped')").wait_for(timeout=120_000)
            assert asfp.locator("button:has-text('Start')").is_enabled()
            assert not asfp.locator("button:has-text('Pause')").is_enabled()

            # Everything queued: the hard run, the comparison, the diagnostics, the adaptive-BN
            # rerun, the export, the report, your CNN (five dashboards in all).
            page.wait_for_selector("text=wrote runs/tutorial/asfp/report.html", timeout=400_000)
            sfp, mine = dashboards.nth(1), dashboards.nth(4)
            mine.locator(".widget-html-content:has-text('run finished')").wait_for(timeout=300_000)
            plots = page.evaluate(PLOTS_JS)
            drawn = [pl for pl in plots if pl["traces"] == 18]
            assert len(drawn) == 5, plots
            for i, d in enumerate(drawn):
                assert d["points"][0] >= EPOCHS + 1  # schedule
                if i != 0:  # the stopped ASFP run has fewer epochs
                    assert d["points"][4] >= EPOCHS + 1  # accuracy: epochs 0..T
            assert len(plots) >= 6  # and the comparison figure

            _shot(page, "02-asfp-stopped.png", asfp)
            _shot(page, "03-sfp-dashboard.png", sfp)
            _shot(page, "04-hard-asfp-dashboard.png", dashboards.nth(2))
            _shot(page, "05-your-own-cnn.png", mine)
            _shot(page, "06-compare.png", page.locator(".js-plotly-plot").nth(3))
            _shot(page, "06-compare-diagnostics.png", page.locator(".js-plotly-plot").nth(4))

            # A PNG from the Save button, in the run's folder.
            asfp.locator("button:has-text('Save figure')").click()
            asfp.locator(".widget-html-content:has-text('figure saved')").wait_for(timeout=120_000)
            saved = sorted((work / "runs" / "tutorial" / "asfp" / "figures").glob("*.png"))
            assert saved and saved[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            shutil.copy(saved[0], ARTIFACTS / "07-saved-from-the-button.png")

            # Move the first dashboard's "target P" slider by typing into its readout.
            before = page.evaluate(SCHEDULE_Y_JS)
            _set_target_p(page, 0.2, "08-slider-FAILED.png", console)
            after_slider = page.evaluate(SCHEDULE_Y_JS)
            assert before[-1] == pytest.approx(40.0) and after_slider[-1] == pytest.approx(20.0)
            _shot(page, "08-asfp-after-slider.png",
                  page.locator(".jp-OutputArea-output:has(.js-plotly-plot)").nth(0))
            text = page.locator(".widget-html-content:has-text('at P = 20 %')")
            assert text.count() >= 1  # the FLOPs prediction followed the slider too

            # A reload (kernel alive): the dashboards come back with their data (the bug was blank
            # figures). The notebook is saved first, as Lab's autosave would: a reload reads the
            # outputs (the widget views) from the file and their state from the kernel.
            # The traffic counted above is the run's: frame events would copy the restore
            # message out of the browser too.
            page.remove_listener("websocket", on_ws)
            _save(page, work / "tutorial.ipynb")
            time.sleep(5)  # a user reloads a while after the save
            page.reload()
            page.wait_for_selector("text=| Idle", timeout=120_000)
            # Every figure comes back, the first dashboard as it was, with the slider's change.
            # (Before plotly_code.py, half of these reloads drew only the first 0-4 figures:
            # "model not found" for the others.)
            all_drawn = (f"() => {{ const p = ({PLOTS_JS})(); return p.length === {len(plots)}"
                         " && p.every(x => x.traces > 0); }")
            try:
                page.wait_for_function(all_drawn, timeout=120_000)
                page.wait_for_function(
                    "() => { const gd = document.querySelector('.js-plotly-plot');"
                    " return gd && (gd.data || []).length === 18 && gd.data[4].y"
                    " && gd.data[4].y.length > 1; }", timeout=60_000)
            except Exception:
                _shot(page, "09-after-reload-FAILED.png")
                (ARTIFACTS / "console.txt").write_text("\n".join(console))
                pytest.fail(f"after a reload the figures hold: {page.evaluate(PLOTS_JS)}")
            after = page.evaluate(PLOTS_JS)
            assert after[0]["points"] == drawn[0]["points"]
            assert page.evaluate(SCHEDULE_Y_JS)[-1] == pytest.approx(20.0)  # the slider's change
            assert page.locator("text=model not found").count() == 0
            restore = [line for line in console if "big message" in line]
            restore.append(f"{sum(a['traces'] > 0 for a in after)} of {len(plots)} figures drawn")
            restore += [line for line in console if "left deaf" in line]
            _shot(page, "09-asfp-after-reload.png", dashboards.nth(0))
            # And they still follow the kernel: the slider moved now redraws the schedule. (It
            # did in only about half of the reloads while anywidget dropped the messages of a
            # figure whose code had been loading for over 2 s; see plotly_code.py.)
            _set_target_p(page, 0.3, "10-slider-after-reload-FAILED.png", console)
            _shot(page, "10-asfp-slider-after-reload.png",
                  page.locator(".jp-OutputArea-output:has(.js-plotly-plot)").nth(0))
        except Exception:  # keep what the page showed, whichever step failed
            _shot(page, "FAILED.png")
            (ARTIFACTS / "console.txt").write_text("\n".join(console))
            shutil.copy(work.parent / "lab.log", ARTIFACTS / "lab.log")  # the kernel's stderr
            raise

        (ARTIFACTS / "console.txt").write_text("\n".join(console))
        browser.close()
    seconds = time.monotonic() - t_start
    (ARTIFACTS / "traffic.json").write_text(json.dumps({**received, "seconds": seconds}))
    print(f"\nbrowser test: {seconds:.0f} s; websocket frames received {received['frames']}, "
          f"{received['bytes'] / 1e6:.1f} MB; after the reload: {'; '.join(restore)}")


LIVE_NOTEBOOK = """import ipywidgets as w
import plotly.graph_objects as go
from asfp_explorer.viz.live_figure import LiveFigure

fig = LiveFigure(data=[go.Scatter(y=[1.0, 2.0])])
k = w.FloatSlider(value=1, min=0, max=10, description="k")


def follow(change):
    with fig.batch_update():
        fig.data[0].y = [change["new"]] * 3


k.observe(follow, names="value")
fig.sync_state()
display(w.VBox([k, fig]))"""
FIRST_Y_JS = "() => Array.from(document.querySelector('.js-plotly-plot').data[0].y)"


def _type_into_slider(page, value: float) -> None:
    readout = page.locator(".widget-slider .widget-readout").first
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def test_a_live_figure_keeps_its_data_and_its_updates_across_a_reload(tmp_path):
    """The reload bug in isolation: a LiveFigure updated after display, the page reloaded, then
    updated again (a plain FigureWidget comes back with its construction-time data)."""
    from playwright.sync_api import sync_playwright

    work = _one_cell_notebook(tmp_path, "live.ipynb", LIVE_NOTEBOOK)
    with _lab_server(tmp_path, work) as (base, token, _), sync_playwright() as p:
        browser, page = _open_notebook(p, base, token, "live.ipynb", 900)
        _run_all(page)
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        _type_into_slider(page, 3)
        page.wait_for_function(f"() => ({FIRST_Y_JS})().join() === '3,3,3'", timeout=30_000)
        _save(page, work / "live.ipynb")
        time.sleep(2)
        page.reload()
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        page.wait_for_function(f"() => ({FIRST_Y_JS})().length === 3", timeout=30_000)
        assert page.evaluate(FIRST_Y_JS) == [3, 3, 3]  # the data as it was, not [1, 2]
        _type_into_slider(page, 5)
        page.wait_for_function(f"() => ({FIRST_Y_JS})().join() === '5,5,5'", timeout=30_000)
        browser.close()


TWO_FIGURES_NOTEBOOK = """import ipywidgets as w
import plotly.graph_objects as go
from asfp_explorer.viz.live_figure import LiveFigure

figures = [LiveFigure(data=[go.Scatter(y=[0.0])]) for _ in range(2)]
level = w.FloatSlider(value=0, min=0, max=10, description="level")


def follow(change):
    for k, fig in enumerate(figures):
        with fig.batch_update():
            fig.data[0].y = [k + 1.0 + change["new"]] * 4


level.observe(follow, names="value")
display(level)
for fig in figures:
    fig.sync_state()
    display(fig)
follow({"new": 0.0})"""
# What the tutorial's reloads showed on a slow machine, made certain. An output asks for its
# model as soon as the page has a widget manager, before the restore's answer is in, and
# jupyterlab-widgets (8.1.9) then polls every 100 ms for 2 s. In the failed reloads these
# polls did not get to run for up to 1.8 s after the models were registered, while the page
# compiled plotly and drew figures; they woke after their 2 s and gave up ("model not found")
# without looking again. Here: from page load until the first import of plotly's code (a
# blob over 1 MB), the 100-ms sleeps of promise-based polls are held back; that import then
# keeps the page busy for 3 s, and the held sleeps run after it. A safety valve lets them go
# after 20 s in any case.
BUSY_AFTER_RESTORE_JS = """(() => {
  const nativeSetTimeout = window.setTimeout;
  const held = [];
  let holding = true;
  const letGo = () => { holding = false; held.splice(0).forEach(f => nativeSetTimeout(f, 0)); };
  nativeSetTimeout(letGo, 20000);
  window.setTimeout = function (fn, ms, ...args) {
    const promiseResolver = typeof fn === 'function'
      && /native code/.test(Function.prototype.toString.call(fn));
    if (holding && ms === 100 && promiseResolver) { held.push(() => fn(...args)); return 0; }
    return nativeSetTimeout.call(this, fn, ms, ...args);
  };
  const nativeCreate = URL.createObjectURL;
  URL.createObjectURL = function (blob) {
    if (holding && blob && blob.size > 1e6) {
      const end = performance.now() + 3000;
      while (performance.now() < end) {}
      letGo();
    }
    return nativeCreate.call(this, blob);
  };
})();"""
# The other order: the page is busy for 3 s before any of LiveFigure's code has run (from the
# import of its small loader, a JavaScript blob under 20 kB), so the outputs' polls give up
# and show "model not found" first; the loader then draws them again.
BUSY_BEFORE_LOADER_JS = """(() => {
  const nativeCreate = URL.createObjectURL;
  let busy = false;
  URL.createObjectURL = function (blob) {
    if (!busy && blob && blob.type === 'text/javascript' && blob.size < 20000) {
      busy = true;
      const end = performance.now() + 3000;
      while (performance.now() < end) {}
    }
    return nativeCreate.call(this, blob);
  };
})();"""
# anywidget (0.11) gives each model 2 s from its construction until its code is bound; when
# that runs out (a page blocked for seconds after a reload), it drops every later kernel
# message to that model: the figure is drawn but no longer follows the kernel. Here the 2 s
# run out at once for the first figure, as they did in about half of the tutorial's reloads.
BUDGET_RUNS_OUT_JS = """(() => {
  const nativeTimeout = AbortSignal.timeout;
  let first = true;
  AbortSignal.timeout = function (ms) {
    if (!first || ms !== 2000) return nativeTimeout.call(AbortSignal, ms);
    first = false;
    const controller = new AbortController();
    queueMicrotask(() => controller.abort(new DOMException("timed out", "TimeoutError")));
    return controller.signal;
  };
})();"""
ALL_Y_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(gd => gd.data && gd.data[0] ? Array.from(gd.data[0].y) : null)"""


@pytest.mark.parametrize("busy_js", [BUSY_AFTER_RESTORE_JS, BUSY_BEFORE_LOADER_JS,
                                     BUDGET_RUNS_OUT_JS],
                         ids=["busy-after-loader", "busy-before-loader", "budget-runs-out"])
def test_figures_come_back_when_the_page_is_busy_right_after_a_reload(tmp_path, busy_js):
    """Two LiveFigures, reloaded while the page is busy: both come back with their data,
    plotly's code was imported once, no output is left saying "model not found", and a slider
    moved afterwards redraws both."""
    from playwright.sync_api import sync_playwright

    work = _one_cell_notebook(tmp_path, "two.ipynb", TWO_FIGURES_NOTEBOOK)
    with _lab_server(tmp_path, work) as (base, token, _), sync_playwright() as p:
        browser, page = _open_notebook(p, base, token, "two.ipynb", 1400)
        console: list[str] = []  # from the reload on
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        _run_all(page)
        # The cell's updates reach the page before plotly's code is loaded: they are kept and
        # handed to plotly's model once it is (without that, they keep their first data).
        page.wait_for_function(f"() => ({ALL_Y_JS})().map(String).join(';') === '1,1,1,1;2,2,2,2'",
                               timeout=60_000)
        _save(page, work / "two.ipynb")
        time.sleep(2)
        page.add_init_script(busy_js)
        console.clear()
        page.reload()
        try:
            page.wait_for_function(
                f"() => ({ALL_Y_JS})().map(String).join(';') === '1,1,1,1;2,2,2,2'",
                timeout=60_000)
        except Exception:
            _shot(page, "10-busy-reload-FAILED.png")
            pytest.fail(f"after a busy reload the figures hold {page.evaluate(ALL_Y_JS)}; "
                        f"console: {console[-5:]}")
        page.wait_for_function("() => !document.body.textContent.includes('model not found')",
                               timeout=30_000)
        assert page.evaluate("() => globalThis.__asfpExplorerPlotly.size") == 1
        assert page.locator(".jp-mod-dirty").count() == 0  # the redraw left no "modified" mark
        # The figures still listen: a slider moved now redraws both.
        _type_into_slider(page, 5)
        try:
            page.wait_for_function(
                f"() => ({ALL_Y_JS})().map(String).join(';') === '6,6,6,6;7,7,7,7'",
                timeout=30_000)
        except Exception:
            _shot(page, "10-busy-reload-slider-FAILED.png")
            (ARTIFACTS / "console.txt").write_text("\n".join(console))
            pytest.fail(f"after a busy reload a slider move left the figures at "
                        f"{page.evaluate(ALL_Y_JS)}; console: {console[-5:]}")
        if busy_js is BUDGET_RUNS_OUT_JS:  # the case above did happen, and was repaired
            assert any("left deaf by anywidget" in line for line in console), console
        browser.close()
