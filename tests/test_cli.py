"""The command line, end to end (subprocesses, like a user)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from asfp_explorer.schedules import asymptotic


def cli(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "asfp_explorer.cli", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_schedule_lines_and_json():
    r = cli("schedule", "--method", "asfp", "--ratio", "0.4", "--epochs", "200")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 201
    assert lines[25] == "25\t0.30000" and lines[200] == "200\t0.40000"
    r = cli("schedule", "--method", "sfp", "--ratio", "0.3", "--epochs", "4", "--json")
    assert json.loads(r.stdout)["values"] == [0.3] * 5
    r = cli("schedule", "--ratio", "0.4", "--epochs", "100", "--d", "0.25", "--json")
    assert json.loads(r.stdout)["values"][7] == asymptotic(7, 100, 0.4, 0.25)


def test_flops_paper_convention_table():
    r = cli("flops", "--model", "resnet56", "--ratio", "0.4", "--json")
    out = json.loads(r.stdout)
    assert out["dense_macs"] == 125_485_056
    assert round(out["reduction_percent"], 1) == 52.6
    r = cli("flops", "--model", "resnet56", "--ratio", "0.4", "--convention", "exact", "--json")
    exact = json.loads(r.stdout)
    assert 48 < exact["reduction_percent"] < 52.6  # integer channels remove a little less


@pytest.mark.parametrize("args,field", [
    (("schedule", "--d", "0.8"), "d"),
    (("schedule", "--ratio", "1.5"), "prune_ratio"),
    (("schedule", "--method", "magic"), "--method"),
    (("schedule", "--epochs", "0"), "epochs"),
    (("train", "--model", "vgg"), "model.name"),
    (("train", "--epochs", "-3", "--quiet"), "training.epochs"),
    (("train", "--dataset", "npz", "--quiet"), "data.path"),
    (("train", "--dataset", "npz", "--data-path", "nope.npz", "--quiet"), "data.path"),
    (("train", "--criterion", "l3"), "--criterion"),
    (("flops", "--ratio", "-0.1"), "prune_ratio"),
    (("show", "no/such/run"), "run_dir"),
])
def test_wrong_arguments_exit_2_with_one_line(args, field, tmp_path):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert field in lines[0]
    assert "Traceback" not in r.stderr


def test_train_end_to_end_on_digits_then_show(tmp_path):
    r = cli("train", "--model", "resnet20", "--dataset", "digits", "--method", "asfp",
            "--ratio", "0.4", "--epochs", "2", "--batch-size", "128", "--out", "runs/e2e",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "e2e"
    assert r.stdout.strip().endswith("e2e")
    assert "epoch" in r.stderr  # the progress bar
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2]
    assert json.loads(lines[-1])["prune_ratio"] == 0.4
    s = cli("show", str(out))
    assert s.returncode == 0
    assert "finished" in s.stdout and "asfp" in s.stdout
    # the compact model computes what the masked one does, with the MACs counted in training
    ex = cli("export", str(out), "--json", "--device", "cpu")
    assert ex.returncode == 0, ex.stderr
    summary = json.loads(ex.stdout)
    assert summary["relative_error"] <= 1e-4
    assert summary["compact_macs"] == json.loads(lines[-1])["exact_macs"]
    assert (out / "export" / "compact.pt").exists()
    # the same folder again is refused, and nothing is lost
    again = cli("train", "--epochs", "1", "--out", "runs/e2e", "--quiet", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (out / "metrics.jsonl").read_text().splitlines() == lines
