"""`asfp-explorer study`: the grid, its run folders, resuming, the summary, bad grids."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from asfp_explorer.cli import main
from asfp_explorer.config import ConfigError, DataConfig, RunConfig
from asfp_explorer.engine.events import EventKind
from asfp_explorer.store import load_run
from asfp_explorer.study import PRESETS, Study, StudyGrid, StudyProgress, preset_grid

BASE = RunConfig().with_changes(
    data={"batch_size": 64, "train_subset": 200},
    training={"epochs": 2, "device": "cpu"})
GRID = StudyGrid(methods=("sfp", "asfp"), ratios=(0.4,), seeds=(0, 1),
                 remedies=("none", "adaptive-bn"), adaptive_bn_batches=2)
NAMES = {f"{m}-p0.4-{r}-s{s}" for m in ("sfp", "asfp") for r in ("none", "adaptive-bn")
         for s in (0, 1)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny runs gain nothing from threads, and on a loaded machine two threads per process
    spin against each other (10x slower here); restore the session's setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Recorder(StudyProgress):
    """Remembers which runs started (and at which epoch); can stop the study mid-run."""

    def __init__(self, study: Study | None = None, stop_in: str | None = None):
        self.study, self.stop_in = study, stop_in
        self.started: dict[str, int] = {}
        self.done_runs = None
        self.current = None

    def study_start(self, runs, done_runs, done_epochs, total_epochs):
        self.done_runs = done_runs

    def run_start(self, index, run, start_epoch):
        self.current = run.name
        self.started[run.name] = start_epoch

    def event(self, event):
        if (event.kind is EventKind.EPOCH_END and event.epoch == 1
                and self.current == self.stop_in):
            self.study.stop()  # what Ctrl-C does: the run ends at this epoch boundary


def mtimes(out, names):
    return {n: [(out / n / f).stat().st_mtime_ns for f in ("metrics.jsonl", "checkpoint.pt")]
            for n in names}


def test_grid_trains_resumes_after_a_stop_skips_finished_runs_and_summarises(tmp_path):
    out = tmp_path / "study"
    study = Study(BASE, GRID, out)
    stopped_run = "asfp-p0.4-none-s0"  # the 5th of 8
    first = Recorder(study, stop_in=stopped_run)
    assert study.run(first) == "stopped"
    before = list(first.started)
    assert before[-1] == stopped_run and len(before) == 5
    assert load_run(out / stopped_run).status == "stopped"
    assert not (out / "asfp-p0.4-none-s1").exists()  # nothing after the stop was started

    finished = before[:-1]
    stamps = mtimes(out, finished)
    second = Recorder()
    assert Study(BASE, GRID, out).run(second) == "finished"
    assert {p.name for p in out.iterdir() if p.is_dir()} == NAMES
    assert second.done_runs == 4
    assert second.started[stopped_run] == 1  # resumed from its checkpoint, not from scratch
    assert set(second.started) == NAMES - set(finished)
    assert mtimes(out, finished) == stamps  # finished runs were not retrained
    resumed = load_run(out / stopped_run)
    assert any(e.get("event") == "resumed" for e in resumed.events)
    assert [m["epoch"] for m in resumed.metrics] == [0, 1, 2]

    # A process killed after a run's last epoch leaves its summary at status "running": the
    # run is resumed (nothing left to train), not retrained.
    summary_file = out / "sfp-p0.4-none-s1" / "summary.json"
    summary_file.write_text(json.dumps({**json.loads(summary_file.read_text()),
                                        "status": "running"}))
    stamps = mtimes(out, NAMES - {"sfp-p0.4-none-s1"})
    third = Recorder()
    study = Study(BASE, GRID, out)
    assert study.run(third) == "finished"
    assert third.started == {"sfp-p0.4-none-s1": 2}
    assert load_run(out / "sfp-p0.4-none-s1").status == "finished"
    assert mtimes(out, NAMES - {"sfp-p0.4-none-s1"}) == stamps

    # Each run records what it trained.
    for name in NAMES:
        cfg = json.loads((out / name / "config.json").read_text())
        assert cfg["data"]["train_subset"] == 200
        assert cfg["training"]["seed"] == int(name[-1])
        assert cfg["pruning"]["method"] == name.split("-p")[0]
        assert cfg["pruning"]["adaptive_bn_batches"] == (2 if "adaptive-bn" in name else 0)

    summary = study.summarise()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["groups"] == json.loads(json.dumps(summary["groups"]))
    assert summary["sizes"]["train_images"] == 200 and summary["sizes"]["epochs"] == 2
    md = (out / "summary.md").read_text()
    assert (out / "compare.html").stat().st_size > 100_000
    for group in summary["groups"]:
        runs = [load_run(out / f"{group['method']}-p0.4-{group['remedy']}-s{s}") for s in (0, 1)]
        final = np.array([r.metrics[-1]["test_acc_masked"] for r in runs])
        assert group["n"] == 2
        assert group["stats"]["final_acc_masked"]["mean"] == pytest.approx(final.mean(), abs=1e-12)
        assert group["stats"]["final_acc_masked"]["std"] == pytest.approx(final.std(), abs=1e-12)
        revivals = np.array([sum(sum(m["revived"].values()) for m in r.metrics) for r in runs])
        assert group["stats"]["revivals"]["mean"] == pytest.approx(revivals.mean())
        if "dead_total" in runs[0].metrics[-1]:
            dead_max = np.array([max(m["dead_total"] for m in r.metrics) for r in runs])
            assert group["stats"]["dead_max"]["mean"] == pytest.approx(dead_max.mean())
        cell = f"{100 * final.mean():.2f} ± {100 * final.std():.2f}"
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| {group['method']} | 0.4 | {group['remedy']} |"))
        assert cell in row


def test_cli_runs_a_study_and_a_rerun_only_summarises(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["study", "--out", str(out), "--methods", "unpruned,sfp", "--seeds", "3",
            "--remedies", "none,mask-bn", "--epochs", "1", "--train-subset", "100",
            "--batch-size", "50", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    names = {p.name for p in out.iterdir() if p.is_dir()}
    # unpruned only with remedy none; the remedy applies to the pruned method
    assert names == {"unpruned-p0-none-s3", "sfp-p0.4-none-s3", "sfp-p0.4-mask-bn-s3"}
    unpruned = json.loads((out / "unpruned-p0-none-s3" / "config.json").read_text())
    assert unpruned["pruning"]["method"] == "sfp" and unpruned["pruning"]["prune_ratio"] == 0
    assert json.loads((out / "sfp-p0.4-mask-bn-s3" / "config.json").read_text())[
        "pruning"]["mask_bn"] is True
    stamps = mtimes(out, names)
    (out / "summary.md").unlink()
    assert main(argv) == 0
    assert mtimes(out, names) == stamps
    md = (out / "summary.md").read_text()
    assert "| unpruned | 0 | none | 1 |" in md and "--remedies none,mask-bn" in md
    # a different size on the same folder is refused before anything trains
    capsys.readouterr()
    assert main(argv[:-1] + ["--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "training.epochs=1 (the study asks 2)" in err
    assert mtimes(out, names) == stamps


@pytest.mark.parametrize("flags, says", [
    (["--methods", "sfp,bogus"], "methods: 'bogus' is not allowed"),
    (["--methods", ""], "methods: the list is empty"),
    (["--methods", "sfp,sfp"], "methods: 'sfp' appears twice"),
    (["--ratios", "0.4,1.0"], "ratios: 1.0 is not allowed"),
    (["--ratios", "0"], "ratios: 0.0 is not allowed"),
    (["--ratios", "0.4,0.40"], "appears twice"),
    (["--ratios", "abc"], "ratios: 'abc' is not allowed"),
    (["--seeds", "0,1,0"], "seeds: 0 appears twice"),
    (["--seeds", "-1"], "seeds: -1 is not allowed"),
    (["--remedies", "none,magic"], "remedies: 'magic' is not allowed"),
    (["--methods", "unpruned", "--remedies", "adaptive-bn"], "no run is left"),
    (["--remedy-methods", "unpruned"], "remedy_methods: 'unpruned' is not allowed"),
    (["--adaptive-bn-batches", "0"], "adaptive_bn_batches: 0 is not allowed"),
    (["--train-subset", "100000"], "data.train_subset: 100000 is not allowed"),
    (["--epochs", "0"], "training.epochs: 0 is not allowed"),
    (["--dataset", "npz", "--data-path", "no-such.npz"], "data.path"),
    (["--preset", "nope"], "invalid choice"),
])
def test_bad_grids_exit_2_in_one_line_before_any_folder(tmp_path, capsys, flags, says):
    out = tmp_path / "s"
    with pytest.raises(SystemExit) if flags[0] == "--preset" else contextlib.nullcontext():
        rc = main(["study", "--out", str(out), *flags])
        assert rc == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
    assert not out.exists()


def test_a_folder_in_the_way_is_refused_before_anything_trains(tmp_path, capsys):
    out = tmp_path / "s"
    (out / "sfp-p0.4-none-s1").mkdir(parents=True)
    (out / "sfp-p0.4-none-s1" / "notes.txt").write_text("mine")
    rc = main(["study", "--out", str(out), "--methods", "sfp", "--seeds", "0,1"])
    assert rc == 2
    assert "holds 'notes.txt', which no run writes" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["sfp-p0.4-none-s1"]


def test_grid_cells_unpruned_once_per_seed_and_remedy_methods():
    grid = StudyGrid(methods=("unpruned", "hard-sfp", "sfp"), ratios=(0.3, 0.5), seeds=(0, 1),
                     remedies=("none", "adaptive-bn"), remedy_methods=("sfp",))
    names = [r.name for r in grid.runs()]
    assert names == [
        "unpruned-p0-none-s0", "unpruned-p0-none-s1",
        "hard-sfp-p0.3-none-s0", "hard-sfp-p0.3-none-s1",
        "hard-sfp-p0.5-none-s0", "hard-sfp-p0.5-none-s1",
        "sfp-p0.3-none-s0", "sfp-p0.3-none-s1", "sfp-p0.3-adaptive-bn-s0", "sfp-p0.3-adaptive-bn-s1",
        "sfp-p0.5-none-s0", "sfp-p0.5-none-s1", "sfp-p0.5-adaptive-bn-s0", "sfp-p0.5-adaptive-bn-s1"]
    with pytest.raises(ConfigError, match="config: pruning.adaptive_bn_batches"):
        Study(RunConfig().with_changes(pruning={"adaptive_bn_batches": 3}), grid, "unused")


def test_paper_preset_is_the_papers_setting():
    changes, grid_fields = preset_grid("paper-cifar10-resnet56")
    base = RunConfig().with_changes(**changes)
    assert (base.model.name, base.data.name, base.training.epochs, base.data.batch_size) == (
        "resnet56", "cifar10", 200, 128)
    assert base.training.milestone_epochs() == [60, 120, 160]
    runs = StudyGrid(**grid_fields).runs()
    groups = sorted({(r.method, r.remedy) for r in runs})
    assert groups == sorted([("unpruned", "none"), ("hard-sfp", "none"), ("hard-asfp", "none"),
                             ("sfp", "none"), ("asfp", "none"), ("sfp", "adaptive-bn"),
                             ("asfp", "adaptive-bn")])
    assert len(runs) == 7 * 3 and set(PRESETS) == {"paper-cifar10-resnet56"}


def test_train_subset_takes_the_first_images_of_every_class_in_turn():
    from asfp_explorer.data import load_dataset

    full = load_dataset(DataConfig())
    part = load_dataset(DataConfig(train_subset=205))
    y_full = full.y_train.numpy()
    counts = np.bincount(part.y_train.numpy(), minlength=10)
    assert counts.sum() == 205 and counts.max() - counts.min() <= 1
    for c in range(10):  # the first images of the class, in file order
        first = full.x_train.numpy()[y_full == c][:counts[c]]
        assert np.array_equal(part.x_train.numpy()[part.y_train.numpy() == c], first)
    assert part.x_test.shape == full.x_test.shape
