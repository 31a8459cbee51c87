"""The live dashboard without a browser: messages per refresh, steering, messages, costs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from asfp_explorer.engine.events import EventKind
from asfp_explorer.schedules import asymptotic
from asfp_explorer.store import load_run
from asfp_explorer.viz import figures as F
from asfp_explorer.viz.compact_macs import CompactMacsWorker
from asfp_explorer.viz.dashboard import Dashboard
pytest.register_assert_rewrite("conftest_viz")  # it is imported here before pytest loads it
from conftest_viz import attach, one_thread, viz_config  # noqa: E402

pytest_plugins = ["conftest_viz"]  # the shared `viz_runs` fixture


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


def test_observer_returns_in_microseconds(viz_runs):
    dash = Dashboard(viz_config(), refresh_hz=0, fvcore=False)
    events = viz_runs["asfp_events"] * 20
    t0 = time.perf_counter_ns()
    _feed(dash, events)
    per_call_us = (time.perf_counter_ns() - t0) / len(events) / 1e3
    print(f"\nobserver: {per_call_us:.2f} us per event (mean of {len(events)})")
    assert per_call_us < 50


def _wait_for(cond, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def test_slider_change_during_a_run_is_recorded_and_used_next_epoch(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 6}, pruning={"method": "sfp"}),
                     tmp_path / "run", refresh_hz=8, fvcore=False)
    handle = dash.start()
    assert handle is not None
    _wait_for(lambda: handle.epoch >= 1)
    dash.controls.set_value("prune_ratio", 0.2)  # what a slider release does
    assert "queued" in _message_text(dash)
    assert dash.wait() == "finished"
    changes = [e for e in dash.run.events if e["event"] == "parameters_changed"]
    assert len(changes) == 1 and changes[0]["changes"] == {"pruning": {"prune_ratio": 0.2}}
    at = changes[0]["epoch"]
    ratios = {m["epoch"]: m["prune_ratio"] for m in dash.run.metrics}
    assert all(ratios[e] == 0.4 for e in ratios if e <= at)
    assert all(ratios[e] == 0.2 for e in ratios if e > at)
    assert at < 6
    # The run directory recorded the same change, so the steered run can be reproduced.
    assert load_run(tmp_path / "run").events[0]["changes"] == {"pruning": {"prune_ratio": 0.2}}
    assert "finished" in _message_text(dash) and "finished" in dash.status.value


def test_epochs_and_d_steer_an_asymptotic_run(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 3}), refresh_hz=0, fvcore=False)
    handle = dash.start()
    dash.pause()
    _wait_for(lambda: handle.status == "paused" and handle.epoch >= 0)
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
    handle = dash.start()
    _wait_for(lambda: handle.epoch >= 2)
    dash.pause()
    dash.controls.set_value("epochs", 1)
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


def test_wait_returns_at_once_when_called_again(tmp_path):
    dash = Dashboard(viz_config(training={"epochs": 1}), refresh_hz=4, fvcore=True)
    dash.start()
    assert dash.wait() == "finished"
    t0 = time.monotonic()
    assert dash.wait() == "finished"
    assert time.monotonic() - t0 < 1.0


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
