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

Why the loader's `initialize` returns at once: anywidget (0.11) drops every kernel message to
a model whose code was not bound within 2 s of the model's construction. Waiting there for
plotly's code did that in about half of the tutorial's reloads: the figures were drawn but a
slider no longer moved them. See `keepEarlyUpdates` and `keepListening`.
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
const whenIdle = globalThis.requestIdleCallback ?? ((f) => setTimeout(f, 500));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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

// The first figure on a page imports plotly's code when the page is idle: compiling it keeps
// the page busy for a second or more, and the other figures' small loaders should be in first
// (see `initialize` below).
function plotlyModule(model) {
  const id = model.get("_plotly_code");
  if (!modules.has(id)) {
    const loading = (async () => {
      await new Promise((resolve) => whenIdle(resolve, { timeout: 1000 }));
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

// The widget state plotly's model listens to, kernel to page.
const PY2JS = ["_py2js_addTraces", "_py2js_deleteTraces", "_py2js_moveTraces", "_py2js_restyle",
  "_py2js_relayout", "_py2js_update", "_py2js_animate", "_py2js_removeLayoutProps",
  "_py2js_removeTraceProps"];

// Keeps the updates that reach the model before plotly's code is loaded, in order; a new full
// state (`_widget_data` or `_widget_layout`) replaces those before it. The function returned
// initializes plotly's definition and hands it the kept updates as if they came now.
function keepEarlyUpdates(model) {
  const early = [];
  const listeners = [];
  const listen = (event, callback) => {
    model.on(event, callback);
    listeners.push([event, callback]);
  };
  for (const name of PY2JS) {
    listen(`change:${name}`, () => {
      const value = model.get(name);
      if (value !== null && value !== undefined) early.push([name, value]);
    });
  }
  for (const name of ["_widget_data", "_widget_layout"]) {
    listen(`change:${name}`, () => { early.length = 0; });
  }

  return (figure, context) => {
    for (const [event, callback] of listeners) model.off(event, callback);
    const handlers = [];
    const replaying = new Map();
    let recording = true;
    const wrapped = {
      ...model,
      get: (key) => (replaying.has(key) ? replaying.get(key) : model.get(key)),
      on: (event, callback) => {
        if (recording) handlers.push([event, callback]);
        model.on(event, callback);
      },
    };
    figure.initialize?.({ ...context, model: wrapped });
    recording = false;
    for (const [name, value] of early) {
      replaying.set(name, value);
      for (const [event, callback] of handlers) if (event === `change:${name}`) callback();
      replaying.delete(name);
    }
  };
}

// anywidget (0.11) hands a kernel message to a model only once the model's `initialize` has
// returned, and drops all of them for good when that took longer than 2 s from the model's
// construction ("[anywidget] Failed to initialize model."). The figure is drawn but deaf:
// sliders no longer move it. Our `initialize` returns at once, but a page blocked for seconds
// before it even ran (a reload on a slow machine) still leaves the model deaf. Such a model
// gets its messages past anywidget's wait and asks the kernel for its whole state, which
// stands for the messages dropped meanwhile; the figure is drawn after that. Only when
// anywidget's own handler refuses a message. The real model (anywidget hands us a proxy) is
// the manager's model whose `_widget_data` is the very same object.
async function keepListening(proxy) {
  const manager = proxy.widget_manager;
  const data = proxy.get("_widget_data");
  const found = Promise.any(Object.values(manager?._models ?? {}).map(async (promise) => {
    const candidate = await promise;
    if (candidate?.get?.("_widget_data") !== data) throw new Error("another model");
    return candidate;
  }));
  const model = await Promise.race([found, sleep(5000)]).catch(() => undefined);
  if (!model?.comm || typeof model._handle_comm_msg !== "function") return;
  const ownHandler = (proto) => Object.prototype.hasOwnProperty.call(proto, "_handle_comm_msg");
  let proto = Object.getPrototypeOf(model);
  while (proto && !ownHandler(proto)) proto = Object.getPrototypeOf(proto);
  let base = proto && Object.getPrototypeOf(proto);  // below anywidget's handler: ipywidgets'
  while (base && !ownHandler(base)) base = Object.getPrototypeOf(base);
  if (!base) return;
  const probe = { content: { data: { method: "custom", content: {} } }, buffers: [] };
  const deaf = await model._handle_comm_msg(probe).then(() => false, () => true);
  if (!deaf) return;
  console.warn(`asfp-explorer: figure ${model.model_id} was left deaf by anywidget; listening again`);
  let answered;
  const answer = new Promise((resolve) => { answered = resolve; });
  model.comm.on_msg(async (msg) => {
    await base._handle_comm_msg.call(model, msg);
    if (msg.content?.data?.state?._widget_data !== undefined) answered();
  });
  model.comm.send({ method: "request_state" }, {});
  await Promise.race([answer, sleep(10000)]);  // a busy kernel answers later: draw meanwhile
}

export default () => {
  let loaded;  // plotly's widget definition, initialized for this model
  return {
    initialize(context) {
      // Returns at once, so that anywidget keeps delivering messages (see keepListening);
      // plotly's code loads meanwhile and the updates that come first are kept for it.
      const { model } = context;
      holdRestore(model.widget_manager);
      const initializeWith = keepEarlyUpdates(model);
      loaded = (async () => {
        const [plotly] = await Promise.all([plotlyModule(model), keepListening(model)]);
        const figure = typeof plotly.default === "function" ? await plotly.default() : plotly.default;
        initializeWith(figure, context);
        return figure;
      })();
      loaded.catch((e) => console.error("asfp-explorer: plotly's figure code did not load", e));
    },
    async render(context) {
      const figure = await loaded;
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
