"""The live dashboard without a browser: messages per refresh, steering, messages, costs."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from asfp_explorer.engine.events import EventKind
from asfp_explorer.schedules import asymptotic
from asfp_explorer.store import load_run
from asfp_explorer.viz import figures as F
from asfp_explorer.viz.compact_macs import CompactMacsWorker
from asfp_explorer.viz.dashboard import Dashboard
from support import attach, one_thread
from support import tiny_config as viz_config


@pytest.fixture(autouse=True)
def _torch_one_thread():
    with one_thread():
        yield


def _message_text(dash: Dashboard) -> str:
    return dash.controls.message.value


def _feed(dash: Dashboard, events) -> None:
    for e in events:
        dash._observe(e)


def test_one_refresh_sends_one_message_per_figure(viz_runs):
    """Replaying a real run's events: each refresh is one comm message on the one figure."""
    dash = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    comm = attach(dash.figure)
    others = [attach(x) for x in (dash.progress, dash.status, dash.controls.message,
                                  dash.controls.layer)]
    events = viz_runs["asfp_events"]
    starts = [i for i, e in enumerate(events) if e.kind is EventKind.EPOCH_END]
    assert dash.refresh() is False and comm.messages == []  # nothing queued, nothing sent
    sizes = []
    for a, b in zip([-1] + starts, starts):  # RUN_START .. epoch 0, then one epoch at a time
        _feed(dash, events[a + 1:b + 1])
        n = len(comm.messages)
        assert dash.refresh() is True
        assert len(comm.messages) == n + 1, "one epoch's refresh must be one message"
        data = comm.messages[-1][0]
        assert data["method"] == "update" and data["state"]["_py2js_update"] is not None
        sizes.append(comm.bytes(n))
    assert dash.refresh() is False and len(comm.messages) == len(starts)
    widget_msgs = sum(len(c.messages) for c in others)
    print(f"\nper refresh: 1 figure message of {np.mean(sizes) / 1e3:.1f} kB "
          f"({min(sizes)}..{max(sizes)} B); other widgets: "
          f"{widget_msgs / len(starts):.1f} messages")

    # Choosing another layer redraws its two panels: one more message.
    dash.controls.layer.value = dash.run.layer_names[-1]
    assert len(comm.messages) == len(starts) + 1


def test_the_front_end_sees_the_same_data_as_a_static_figure(viz_runs):
    """What the one message carries, applied to the initial widget, is the stored figure."""
    dash = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    _feed(dash, viz_runs["asfp_events"])
    dash.refresh()
    stored, _ = F.dashboard_figure(load_run(viz_runs["asfp"]), F.View(layer=dash.view.layer))
    import json

    live = json.loads(dash.figure.to_json())["data"]
    assert live == json.loads(stored.to_json())["data"]


def test_the_observer_only_queues(viz_runs):
    """Structural, not timed: on the training thread the observer appends to a deque; no
    widget, figure or comm is touched until the refresher folds the events in."""
    dash = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    comms = [attach(x) for x in (dash.figure, dash.progress, dash.status,
                                 dash.controls.message, dash.controls.layer)]
    events = viz_runs["asfp_events"]
    _feed(dash, events)
    assert all(c.messages == [] for c in comms) and dash.run.metrics == []
    assert list(dash._events) == events
    assert dash.run_ended.is_set()  # the one thing it does besides: RUN_END frees a queue
    dash.refresh()
    assert len(dash.run.metrics) == sum(e.kind is EventKind.EPOCH_END for e in events)


def _pause_after(dash: Dashboard, epoch: int) -> None:
    """Pause the dashboard's next run from its own training thread once `epoch` has ended,
    so it holds at exactly that boundary (no race with a test thread). Only a thread worker
    runs observers on the training thread: this sets it."""
    dash.worker = "thread"
    observe = dash._observe

    def hook(event):
        observe(event)
        if event.kind is EventKind.EPOCH_END and event.epoch == epoch:
            dash.handle.pause()

    dash._observe = hook  # start() hands the instance's observer to the RunHandle


def _first_epoch_with(run, key, value):
    return min(m["epoch"] for m in run.metrics if m[key] == value)


def _announced_epoch(message: str) -> int:
    m = re.search(r"applies from epoch (\d+)", message)
    assert m, message
    return int(m.group(1))


def test_a_change_while_paused_applies_from_the_epoch_it_announces(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 4}, pruning={"method": "sfp"}),
                     tmp_path / "run", refresh_hz=0, fvcore=False)
    handle = dash.start()
    dash.pause()
    assert handle.held.wait(120)  # the training thread waits at the boundary after epoch 0
    dash.controls.set_value("prune_ratio", 0.2)  # what a slider release does
    announced = _announced_epoch(_message_text(dash))
    assert announced == handle.epoch + 1
    dash.resume()
    assert dash.wait() == "finished"
    assert _first_epoch_with(dash.run, "prune_ratio", 0.2) == announced
    assert all(m["prune_ratio"] == 0.4 for m in dash.run.metrics if m["epoch"] < announced)
    changes = [e for e in dash.run.events if e["event"] == "parameters_changed"]
    assert len(changes) == 1 and changes[0]["changes"] == {"pruning": {"prune_ratio": 0.2}}
    # The run directory recorded the same change, so the steered run can be reproduced.
    assert load_run(tmp_path / "run").events[0]["changes"] == {"pruning": {"prune_ratio": 0.2}}
    assert "finished" in _message_text(dash) and "finished" in dash.status.value


def test_a_change_while_training_applies_from_the_epoch_it_announces(tmp_path):
    """Queued while an epoch may be in progress: whichever side of the boundary the training
    thread is on, the epoch named in the message is the first that trains with the change."""
    dash = Dashboard(viz_config(training={"epochs": 5}, pruning={"method": "sfp"}),
                     refresh_hz=0, fvcore=False)
    handle = dash.start()
    dash.pause()
    assert handle.held.wait(120)
    dash.resume()  # from here on the thread races on: at the boundary or in epoch 1
    dash.controls.set_value("prune_ratio", 0.3)
    announced = _announced_epoch(_message_text(dash))
    assert dash.wait() == "finished"
    assert _first_epoch_with(dash.run, "prune_ratio", 0.3) == announced
    change = next(e for e in dash.run.events if e["event"] == "parameters_changed")
    assert change["epoch"] + 1 == announced  # the record says the same


def test_epochs_and_d_steer_an_asymptotic_run(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 3}), refresh_hz=0, fvcore=False)
    handle = dash.start()
    dash.pause()
    assert handle.held.wait(120)
    dash.controls.set_value("epochs", 5)
    dash.controls.set_value("d", 0.25)
    dash.resume()
    assert dash.wait() == "finished"
    assert dash.run.metrics[-1]["epoch"] == 5
    last = dash.run.events[-2]
    assert last["event"] == "parameters_changed"
    e0 = dash.run.events[0]["epoch"]
    for m in dash.run.metrics:
        if m["epoch"] > e0:
            assert m["prune_ratio"] == pytest.approx(asymptotic(m["epoch"], 5, 0.4, 0.25))
    assert dash.progress.max == 5 and dash.progress.value == 5


def test_invalid_values_give_one_line_not_a_traceback(tmp_path):
    dash = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    dash.controls.set_value("d", 0.8)
    msg = _message_text(dash)
    assert "0.75" in msg and "Traceback" not in msg and msg.count("<br") == 0
    assert dash.start() is None  # refused, with the same message
    assert "0.75" in _message_text(dash)
    dash.controls.set_value("d", 0.125)
    assert _message_text(dash).endswith("></span>")  # cleared

    # During a run: fewer epochs than are done is refused, and the slider goes back.
    dash = Dashboard(viz_config(training={"epochs": 4}), refresh_hz=0, fvcore=False)
    _pause_after(dash, 2)
    handle = dash.start()
    assert handle.held.wait(120) and handle.epoch == 2
    dash.controls.set_value("epochs", 2)
    assert "epochs" in _message_text(dash) and "#c62828" in _message_text(dash)  # in red
    assert dash.controls.value("epochs") == 4
    dash.stop()
    assert dash.wait() == "stopped"
    assert "stopped" in _message_text(dash)


def test_a_run_folder_in_use_is_a_message(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    dash = Dashboard(viz_config(), tmp_path / "taken", refresh_hz=0, fvcore=False)
    assert dash.start() is None
    assert "already holds a run" in _message_text(dash)


def test_schedule_preview_and_prediction_follow_the_sliders():
    dash = Dashboard(viz_config(training={"epochs": 10}), refresh_hz=0, fvcore=False)
    comm = attach(dash.figure)
    before = np.array(dash.figure.data[0].y)
    dash.controls.set_value("prune_ratio", 0.3)
    after = np.array(dash.figure.data[0].y)
    assert after[-1] == pytest.approx(30.0) and before[-1] == pytest.approx(40.0)
    assert len(comm.messages) == 1
    prediction = dash.controls.prediction.value
    assert "P = 30 %" in prediction and "exact" in prediction
    dash.controls.set_value("method", "sfp")
    assert np.allclose(dash.figure.data[0].y, 30.0)
    dash.controls.set_value("epochs", 20)
    assert len(dash.figure.data[0].x) == 21


def test_replay_shows_a_stored_run_in_the_live_layout(viz_runs):
    dash = Dashboard.replay(viz_runs["sfp0"])
    stored, _ = F.dashboard_figure(load_run(viz_runs["sfp0"]))
    import json

    assert json.loads(dash.figure.to_json())["data"] == json.loads(stored.to_json())["data"]
    assert dash.controls.start.disabled and dash.controls.widgets["d"].disabled
    assert dash.controls.layer.options == tuple(load_run(viz_runs["sfp0"]).layer_names)


def test_fvcore_worker_counts_each_kept_signature_once():
    calls = []

    def count(config, info, masks):
        calls.append(threading.current_thread().name)
        return int(sum(m.sum() for m in masks)) * 10

    with ThreadPoolExecutor(1, thread_name_prefix="counter") as pool:
        worker = CompactMacsWorker({}, {}, count=count, executor=pool)
        a = [np.array([True, False]), np.array([True, True])]
        b = [np.array([False, True]), np.array([True, True])]  # same counts as a
        c = [np.array([True, True]), np.array([True, True])]
        for e, m in enumerate([a, b, c, a]):
            worker.submit(e, m)
        assert worker.drain(timeout=10) and worker.idle()
    assert worker.results() == {0: 30, 1: 30, 2: 40, 3: 30}
    assert len(calls) == 2 and all(n.startswith("counter") for n in calls)  # once per signature


def test_fvcore_worker_turns_errors_into_one_line():
    def boom(config, info, masks):
        raise RuntimeError("no trace\nsecond line")

    with ThreadPoolExecutor(1) as pool:
        worker = CompactMacsWorker({}, {}, count=boom, executor=pool)
        worker.submit(1, [np.ones(2, bool)])
        assert worker.drain(timeout=10)
    assert worker.results() == {} and worker.errors == [
        "fvcore count failed at epoch 1: RuntimeError: no trace"]


def test_live_fvcore_counts_match_the_exact_counts(tmp_path):
    """In the worker process, while training runs: the counts equal the exact ones and the
    run is unharmed (a trace on a thread would break the training thread's forward passes)."""
    dash = Dashboard(viz_config(training={"epochs": 4}), refresh_hz=4, fvcore=True)
    dash.start()
    assert dash.wait() == "finished"
    fv = dash.view.fvcore_macs
    exact = {m["epoch"]: m["exact_macs"] for m in dash.run.metrics if m["masks_updated"]}
    assert fv == exact
    assert "differs" not in _message_text(dash) and "fvcore" not in _message_text(dash)


def test_wait_called_again_redraws_nothing(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=4, fvcore=True)
    dash.start()
    assert dash.wait() == "finished"
    comm = attach(dash.figure)
    assert dash.wait() == "finished"
    assert comm.messages == [] and not dash._refresher.is_alive()


def test_export_button_shows_the_compact_models_speedup(tmp_path):
    """After a run: the compact model is saved in the run folder, equals the masked model and
    its timing table appears under the figures; a replay of the folder shows it again."""
    import json

    dash = Dashboard(viz_config(training={"epochs": 2}), tmp_path / "run", refresh_hz=0,
                     fvcore=False)
    assert dash.export() is None and "start a run first" in _message_text(dash)
    dash.start()
    assert dash.wait() == "finished" and not dash.controls.export.disabled
    dash.export(batch_sizes=(1, 8)).join(120)
    summary = json.loads((tmp_path / "run" / "export" / "export.json").read_text())
    assert summary["relative_error"] <= 1e-4
    assert summary["compact_macs"] == dash.run.metrics[-1]["exact_macs"]
    assert [r["batch_size"] for r in summary["benchmark"]["batches"]] == [1, 8]
    assert "speed-up" in dash.speedup.value and "compact model saved" in _message_text(dash)
    replay = Dashboard.replay(tmp_path / "run")
    assert replay.speedup.value == dash.speedup.value
    assert not replay.controls.export.disabled
    from asfp_explorer.viz import report_html

    page = report_html(tmp_path / "run", tmp_path / "report.html").read_text()
    assert "The compact model" in page and dash.speedup.value in page


# ---------------------------------------------------------------- clicks, pauses, queues


def test_clicks_after_the_run_ended_are_ignored_with_a_line(tmp_path):
    """A click that reaches the kernel late (a cell held it up) must not touch an ended run:
    before the fix it left Resume and Stop enabled, Start disabled, "stopping..." shown."""
    dash = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=0, fvcore=False)
    dash.start()
    assert dash.wait() == "finished"
    for button in (dash.controls.pause, dash.controls.stop):
        button.disabled = False  # as a stale browser view would still show them
        button.click()
        assert "ignored" in _message_text(dash) and "finished" in _message_text(dash)
        assert dash.handle.status == "finished"
        c = dash.controls
        assert not c.start.disabled and c.pause.disabled and c.stop.disabled
        assert c.pause.description == "Pause" and not c.export.disabled
    dash.resume()
    assert "Resume ignored" in _message_text(dash)
    fresh = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    fresh.stop()
    assert "no run has started" in _message_text(fresh)


def test_pause_is_confirmed_and_the_eta_stops(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 3}), refresh_hz=0, fvcore=False)
    _pause_after(dash, 1)
    handle = dash.start()
    assert handle.held.wait(120)
    dash.refresh()
    assert "paused after epoch 1" in _message_text(dash)
    assert "paused" in dash.status.value and "ETA" not in dash.status.value
    assert dash.controls.pause.description == "Resume"
    dash.resume()
    handle.wait()
    assert not handle.held.is_set()
    dash.wait()
    assert "paused" not in dash.status.value


def test_then_runs_dashboards_one_after_another(tmp_path):
    """`a.then(b).then(job)` returns at once; b starts only once a's run has ended, the job
    after b; a refused start does not strand the queue."""
    a = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=0, fvcore=False, title="a")
    b = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=0, fvcore=False, title="b")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    refused = Dashboard(viz_config(), tmp_path / "taken", refresh_hz=0, fvcore=False)
    seen = []
    start_b = b.start
    b.start = lambda: (seen.append(a.handle.status), start_b())[1]  # a's state as b starts
    assert a.then(b) is b
    assert "queued: starts when a has ended" in _message_text(b)
    b.then(refused).then(lambda: seen.append(b.handle.status))
    assert a.queue is b.queue is refused.queue and a.queue.pending == 4
    assert b.handle is None  # nothing ran yet: a has not started
    a.start()
    assert a.queue.wait(300)
    assert seen == ["finished", "finished"]
    assert a.queue.results == ["finished", "finished", "refused", None]
    assert a.queue.errors == [] and "already holds a run" in _message_text(refused)


def test_run_queue_order_errors_and_cancel():
    from asfp_explorer.engine.queue import RunQueue

    gate = threading.Event()
    order = []
    q = RunQueue()
    q.add(lambda: (gate.wait(60), order.append(1))[1], "first")
    q.add(lambda: 1 / 0, "broken")
    q.add(lambda: order.append(3) or "three")
    q.add(lambda: order.append(4))
    assert q.pending == 4
    gate.set()
    assert q.wait(60)
    assert order == [1, 3, 4] and q.results == [None, "three", None]
    assert q.errors == ["broken: ZeroDivisionError: division by zero"]
    gate.clear()
    q.add(lambda: gate.wait(60))
    q.add(lambda: order.append(5))
    assert q.cancel() in (1, 2)  # the first may have started already; it is never dropped
    gate.set()
    assert q.wait(60) and 5 not in order


def test_trained_model_is_public_and_refused_while_training(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 2}), tmp_path / "run", refresh_hz=0,
                     fvcore=False)
    _pause_after(dash, 0)
    handle = dash.start()
    assert handle.held.wait(120)
    with pytest.raises(RuntimeError, match="still going"):
        dash.trained_model()
    dash.resume()
    assert dash.wait() == "finished"
    live = dash.trained_model()
    assert live.model is handle.trainer.model and live.input_size == (1, 8, 8)
    assert set(live.masks) == set(dash.run.layer_names)
    stored = Dashboard.replay(tmp_path / "run").trained_model()
    for name, mask in live.masks.items():
        assert torch.equal(stored.masks[name].cpu(), mask.cpu())
    x = torch.randn(4, 1, 8, 8)
    live.model.eval()
    assert torch.allclose(stored.model(x), live.model(x), atol=1e-5)


# ---------------------------------------------------------------- what a (re)loaded view draws


def _shape(v):
    """Length of a serialised array: plotly sends numpy as {dtype, shape, value}, lists as is."""
    if isinstance(v, dict) and "shape" in v:
        return tuple(v["shape"])
    return (len(v),)


def test_a_reloaded_page_gets_the_figure_as_it_is_now(viz_runs):
    """A reload asks the kernel for the full widget state: it must hold the current traces
    and layout (not those of construction) and no pending update (views do not apply one)."""
    dash = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    _feed(dash, viz_runs["asfp_events"])
    dash.refresh()
    state = dash.figure.get_state()
    assert state["_py2js_update"] is None
    live = dash.figure
    for sent, trace in zip(state["_widget_data"], live.data):
        for key in ("x", "y"):
            if trace[key] is not None:
                assert _shape(sent[key]) == (len(trace[key]),), (trace.name, key)
    n = len(dash.run.metrics)
    accuracy = next(t for t in state["_widget_data"] if t.get("name") == "test acc, masked")
    assert _shape(accuracy["y"]) == (n,) and n > 1
    assert state["_widget_layout"]["xaxis"]["range"] == list(live.layout.xaxis.range)
    # A key-by-key update (ipywidgets' send_state of one trait) is untouched.
    assert dash.figure.get_state("_py2js_update")["_py2js_update"] is not None


def test_a_replay_shown_later_holds_the_dense_baseline(viz_runs):
    """Replays were drawn by updates sent before any view existed; a view created at show()
    drew construction-time traces plus the last update only, losing the dense-MACs line."""
    dash = Dashboard.replay(viz_runs["asfp"])
    comm = attach(dash.figure)
    dash.figure.sync_state()  # what show() does before display
    assert len(comm.messages) == 1
    sent = comm.messages[0][0]["state"]["_widget_data"]
    dense = next(t for t in sent if t.get("name") == "dense")
    assert _shape(dense["y"]) == (2,)
    assert comm.messages[0][0]["state"]["_py2js_update"] is None


# ---------------------------------------------------------------- figure files


def test_save_figure_needs_kaleido_and_says_so(monkeypatch, tmp_path):
    from asfp_explorer.viz import image_export

    dash = Dashboard(viz_config(), tmp_path / "run", refresh_hz=0, fvcore=False)
    monkeypatch.setattr(image_export, "kaleido_available", lambda: False)
    with pytest.raises(image_export.FigureExportError, match=r"pip install 'asfp-explorer\[figures\]'"):
        dash.save_figure(tmp_path / "a.png")
    with pytest.raises(image_export.FigureExportError, match="png, .svg or .pdf"):
        dash.save_figure(tmp_path / "a.jpg")


@pytest.mark.slow
def test_save_figure_writes_png_svg_pdf(viz_runs, tmp_path):
    pytest.importorskip("kaleido")
    dash = Dashboard.replay(viz_runs["asfp"])
    dash.run_dir = tmp_path / "replayed"
    dash.run_dir.mkdir()
    try:
        png = dash.save_figure()  # the default place: run_dir/figures/
    except Exception as e:  # kaleido present but no Chrome/Chromium to drive
        pytest.skip(str(e))
    assert png == tmp_path / "replayed" / "figures" / "dashboard-epoch-3.png"
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert (width, height) == (2 * 1400, 2 * 1000)  # scale 2, the dashboard's 1000 px height
    svg = dash.save_figure(tmp_path / "d.svg")
    assert svg.read_text().lstrip().startswith("<svg") and "Schedule" in svg.read_text()
    assert dash.save_figure(tmp_path / "d.pdf").read_bytes()[:5] == b"%PDF-"


def test_wait_on_a_queued_dashboard_waits_for_its_run():
    a = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=0, fvcore=False, title="a")
    b = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=0, fvcore=False, title="b")
    a.then(b)
    assert b.wait(timeout=0.01) == "queued" and b.handle is None  # a has not even started
    a.start()
    assert b.wait() == "finished" and a.handle.status == "finished"
    assert len(b.run.metrics) == 2


def test_a_control_echoing_its_value_records_no_change(tmp_path):
    """A browser view sends a slider's value back as it renders (0.125 for D): during a run
    that must not become a recorded parameter change."""
    dash = Dashboard(viz_config(training={"epochs": 2}), refresh_hz=0, fvcore=False)
    _pause_after(dash, 0)
    handle = dash.start()
    assert handle.held.wait(120)
    dash.steering.on_control("d", 0.125)  # what the widget's change handler receives
    dash.steering.on_control("prune_ratio", 0.4000001)
    dash.resume()
    assert dash.wait() == "finished"
    assert [e for e in dash.run.events if e["event"] == "parameters_changed"] == []


def test_redraws_take_at_most_their_share_of_the_wall_time():
    from asfp_explorer.viz.pacing import next_wait

    assert next_wait(0.001, 0.25) == 0.25  # cheap redraws: the refresh rate decides
    for spent in (0.01, 0.1, 1.0):  # slow ones: redraw time / wall time is the share
        wait = next_wait(spent, 0.0, busy_share=0.05)
        assert spent / (spent + wait) == pytest.approx(0.05)
    assert next_wait(0.06, 0.25, busy_share=1.0) == 0.25  # a share of 1 never waits longer


def test_busy_share_is_checked():
    with pytest.raises(ValueError, match=r"busy_share: 0 is not allowed; expected a share in"):
        Dashboard(viz_config(), refresh_hz=0, fvcore=False, busy_share=0)
