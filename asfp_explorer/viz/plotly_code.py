"""plotly's widget code, sent once per kernel and loaded once per page by every LiveFigure,
and a page reload that draws every widget output.

plotly's FigureWidget is an anywidget whose `_esm` is plotly's whole widget bundle (~5 MB of
JavaScript), so every figure carries it in its widget state and the browser compiles it once
per figure. Here the bundle travels once, as the binary buffer of one model-only widget
(`PlotlyCode`), which JSON parsing skips; each `LiveFigure`'s `_esm` is the small loader
`LOADER_ESM`, which imports the bundle from that widget once per page and kernel and builds
each figure with plotly's own code.

Why it matters on a reload: the page gets every widget's state in one message, and each
widget output asks for its model before that answer is in. jupyterlab-widgets (8.1.9) then
polls every 100 ms for 2 s; a poll that wakes after its 2 s gives up without looking again
and, if the restore has finished meanwhile, shows "Error displaying widget: model not found"
for good (jupyter-widgets/ipywidgets#4026). With the tutorial's five dashboards the message
was 26 MB and the page stayed busy for seconds after the models were registered; Chrome ran
some polls 1.6-1.8 s late, and about half of the reloads on the 2-core test machine left some
of the ten outputs blank. The loader also covers what a smaller message does not: see
`holdRestore` and `redrawGivenUp` below (docs/dashboard.md, "Known limits", has the numbers).
"""

from __future__ import annotations

import threading

import ipywidgets as w
import plotly.basewidget
import traitlets

# The anywidget module of every LiveFigure. `_plotly_code` is the model id of the PlotlyCode
# widget; the imported module is kept per id on the page, so figures share one plotly.js.
# `holdRestore` works around jupyterlab-widgets' give-up (see the module docstring): while the
# page settles after the first LiveFigure model is built, the manager reports its restore as
# unfinished, so an output whose poll ran out waits for the `restored` signal instead of
# showing "model not found"; then the signal is sent once more and those outputs draw, and
# `redrawGivenUp` draws those that gave up before this code ran. Both only touch a manager
# that has `restoredStatus` and a `restored` signal (JupyterLab's).
LOADER_ESM = """\
const modules = (globalThis.__asfpExplorerPlotly ??= new Map());
const held = (globalThis.__asfpExplorerHeld ??= new WeakSet());
const SETTLE_MS = 2500;  // longer than the manager's 2 s wait for a model

function holdRestore(manager) {
  if (!manager || held.has(manager) || !("restoredStatus" in manager)
      || typeof manager.restored?.emit !== "function") return;
  held.add(manager);
  Object.defineProperty(manager, "restoredStatus", { configurable: true, get: () => false });
  const release = () => {
    delete manager.restoredStatus;
    manager.restored.emit();
    redrawGivenUp(manager).catch((e) => console.warn("asfp-explorer: no redraw of outputs", e));
  };
  // After the settle time, wait until the page is idle: every poll that was due has run.
  const whenIdle = globalThis.requestIdleCallback ?? ((f) => setTimeout(f, 500));
  setTimeout(() => whenIdle(release, { timeout: 10000 }), SETTLE_MS);
}

// Outputs that gave up before this module ran. JupyterLab's manager knows its notebook: each
// widget output whose model exists but is not drawn as an output anywhere (none of its views
// sits directly in an output area; a dashboard's parts also have views inside the dashboard)
// is set again (same content), which makes Lab render it anew. Only when the page shows the
// error; the notebook's "modified" flag is left as it was.
async function redrawGivenUp(manager) {
  const notebook = manager.context?.model;
  const failed = [...document.querySelectorAll(".jp-OutputArea-output")]
    .some((node) => node.textContent.startsWith("Error displaying widget: model not found"));
  if (!failed || !notebook?.cells) return;
  const wasDirty = notebook.dirty;
  for (const cell of notebook.cells) {
    const outputs = cell.outputs;
    for (let i = 0; outputs && i < outputs.length; i++) {
      const item = outputs.get(i);
      const id = item.data?.["application/vnd.jupyter.widget-view+json"]?.model_id;
      if (!id || !manager.has_model(id)) continue;
      const model = await manager.get_model(id);
      const views = await Promise.all(Object.values(model.views ?? {}));
      const shown = views.some((v) => v?.el?.parentElement?.classList.contains("jp-OutputArea-output"));
      if (!shown) outputs.set(i, item.toJSON());
    }
  }
  notebook.dirty = wasDirty;
}

function plotlyModule(model) {
  const id = model.get("_plotly_code");
  if (!modules.has(id)) {
    const loading = (async () => {
      const carrier = await model.widget_manager.get_model(id);
      const blob = new Blob([carrier.get("code")], { type: "text/javascript" });
      const url = URL.createObjectURL(blob);
      try {
        return await import(url);
      } finally {
        URL.revokeObjectURL(url);
      }
    })();
    loading.catch(() => modules.delete(id));  // let the next figure try again
    modules.set(id, loading);
  }
  return modules.get(id);
}

export default () => {
  let figure;  // plotly's own widget definition for this model
  return {
    async initialize(context) {
      holdRestore(context.model.widget_manager);
      const plotly = await plotlyModule(context.model);
      figure = typeof plotly.default === "function" ? await plotly.default() : plotly.default;
      return figure.initialize?.(context);
    },
    render(context) {
      return figure.render(context);
    },
  };
};
"""


class PlotlyCode(w.Widget):
    """A widget without a view whose state is plotly's widget bundle (UTF-8 bytes)."""

    code = traitlets.Bytes().tag(sync=True)


_lock = threading.Lock()
_shared: PlotlyCode | None = None


def shared_plotly_code() -> PlotlyCode:
    """This kernel's PlotlyCode widget, created on first use (and again if it was closed)."""
    global _shared
    with _lock:
        if _shared is None or _shared.comm is None:
            bundle = str(plotly.basewidget.BaseFigureWidget._esm)  # plotly reads its file once
            _shared = PlotlyCode(code=bundle.encode("utf-8"))
        return _shared
