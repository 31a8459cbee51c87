"""A study: a grid of runs (methods x ratios x seeds x remedies, one model and data set) in
one folder, resumable, summarised as a table of means ± std over seeds.

    OUT/
      study.json                       the grid, the base configuration, each session that trained
      <method>-p<ratio>-<remedy>-s<seed>/   one run directory each (see store.py)
      summary.md, summary.json         one row per (method, ratio, remedy)
      compare.html                     the runs through viz/compare.py, seeds as mean ± std

"unpruned" is the method name of P = 0: trained as method sfp with prune_ratio 0, once per
seed and only with remedy none. A run that finished (or diverged, which would diverge again) is
skipped; one with a checkpoint is resumed exactly as `train --resume` does; one without a
checkpoint is started again. Every check (grid, configs, data, existing folders) happens before
anything trains or any folder is created.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import METHODS, ConfigError, RunConfig

# No numpy, torch or engine import at module level: the CLI reads the choices below at start-up.

UNPRUNED = "unpruned"
STUDY_METHODS = (UNPRUNED, *METHODS)
# remedy -> the pruning fields it sets ("adaptive-bn" gets its batch count from the grid)
REMEDIES = ("none", "adaptive-bn", "mask-bn")
DEFAULT_ADAPTIVE_BN_BATCHES = 20
DONE_STATUSES = ("finished", "diverged")  # rerunning either would give the same record

# Named studies: config changes (sections as in RunConfig.with_changes) and the grid.
PRESETS: dict[str, dict[str, Any]] = {
    "paper-cifar10-resnet56": {
        "description": "the paper's CIFAR-10 setting: full CIFAR-10, ResNet-56, 200 epochs, "
                       "batch 128, 3 seeds, P = 0.4; SFP and ASFP also with adaptive BN",
        "config": {"data": {"name": "cifar10", "batch_size": 128},
                   "model": {"name": "resnet56"},
                   "training": {"epochs": 200, "lr": 0.1}},
        "grid": {"methods": ("unpruned", "hard-sfp", "hard-asfp", "sfp", "asfp"),
                 "ratios": (0.4,), "seeds": (0, 1, 2), "remedies": ("none", "adaptive-bn"),
                 "remedy_methods": ("sfp", "asfp")},
    },
}


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}: {value!r} is not allowed; {allowed}")


def _distinct(name: str, values: Sequence[Any]) -> None:
    if not values:
        raise ConfigError(f"{name}: the list is empty; give at least one value")
    seen = set()
    for v in values:
        if v in seen:
            raise ConfigError(f"{name}: {v!r} appears twice; expected distinct values")
        seen.add(v)


@dataclass(frozen=True)
class StudyGrid:
    """What varies. `remedy_methods`: the methods that get remedies other than "none"
    (None = every pruned method of the grid); `unpruned` only ever gets "none"."""

    methods: tuple[str, ...]
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    remedies: tuple[str, ...] = ("none",)
    remedy_methods: tuple[str, ...] | None = None
    adaptive_bn_batches: int = DEFAULT_ADAPTIVE_BN_BATCHES

    def __post_init__(self) -> None:
        for name in ("methods", "ratios", "seeds", "remedies"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _distinct("methods", self.methods)
        for m in self.methods:
            if m not in STUDY_METHODS:
                _fail("methods", m, f"allowed: {', '.join(STUDY_METHODS)}")
        pruned = [m for m in self.methods if m != UNPRUNED]
        if pruned:  # ratios only matter for pruned methods
            _distinct("ratios", self.ratios)
            for r in self.ratios:
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r < 1:
                    _fail("ratios", r, "expected numbers in (0, 1); P = 0 is the method "
                          "'unpruned'")
            names = [f"{r:g}" for r in self.ratios]
            _distinct("ratios (as written in folder names)", names)
        _distinct("seeds", self.seeds)
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                _fail("seeds", s, "expected integers >= 0")
        _distinct("remedies", self.remedies)
        for r in self.remedies:
            if r not in REMEDIES:
                _fail("remedies", r, f"allowed: {', '.join(REMEDIES)}")
        if self.remedy_methods is not None:
            object.__setattr__(self, "remedy_methods", tuple(self.remedy_methods))
            _distinct("remedy_methods", self.remedy_methods)
            for m in self.remedy_methods:
                if m not in pruned:
                    _fail("remedy_methods", m, "expected pruned methods of the grid: "
                          f"{', '.join(pruned) or 'none given'}")
        n = self.adaptive_bn_batches
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            _fail("adaptive_bn_batches", n, "expected an integer in [1, 10000]")
        if not self.cells():
            raise ConfigError("remedies: no run is left (only 'unpruned' with remedies other "
                              "than 'none'); add 'none' or a pruned method")

    def cells(self) -> list[tuple[str, float, str]]:
        """(method, ratio, remedy) of every group, in grid order."""
        out = []
        for method in self.methods:
            for ratio in ((0.0,) if method == UNPRUNED else self.ratios):
                for remedy in self.remedies:
                    if remedy != "none" and (method == UNPRUNED or (
                            self.remedy_methods is not None and method not in self.remedy_methods)):
                        continue  # a remedy of nothing pruned, or not asked for this method
                    out.append((method, float(ratio), remedy))
        return out

    def runs(self) -> list["StudyRun"]:
        """Every run, grouped: all seeds of a cell follow each other."""
        return [StudyRun(m, r, rem, s) for m, r, rem in self.cells() for s in self.seeds]


@dataclass(frozen=True)
class StudyRun:
    method: str  # a study method (unpruned or a config method)
    ratio: float
    remedy: str
    seed: int

    @property
    def name(self) -> str:
        """The run folder: <method>-p<ratio>-<remedy>-s<seed>, e.g. asfp-p0.4-adaptive-bn-s1."""
        return f"{self.method}-p{self.ratio:g}-{self.remedy}-s{self.seed}"

    @property
    def group(self) -> str:
        return f"{self.method} P={self.ratio:g} {self.remedy}"

    def config(self, base: RunConfig, adaptive_bn_batches: int) -> RunConfig:
        pruning: dict[str, Any] = {
            "method": "sfp" if self.method == UNPRUNED else self.method,
            "prune_ratio": self.ratio,
            "adaptive_bn_batches": adaptive_bn_batches if self.remedy == "adaptive-bn" else 0,
            "mask_bn": self.remedy == "mask-bn",
        }
        return base.with_changes(pruning=pruning, training={"seed": self.seed})


def preset_grid(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config changes, grid fields) of a named study."""
    if name not in PRESETS:
        _fail("preset", name, f"allowed: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return dict(p["config"]), dict(p["grid"])


# ------------------------------------------------------------------ progress

class StudyProgress:
    """Hooks a study calls; the default does nothing. `event` receives the current run's
    engine events (on the training thread, so it must return quickly)."""

    def study_start(self, runs: Sequence[StudyRun], done_runs: int, done_epochs: int,
                    total_epochs: int) -> None: ...

    def run_start(self, index: int, run: StudyRun, start_epoch: int) -> None: ...

    def event(self, event) -> None: ...

    def run_end(self, index: int, run: StudyRun, status: str) -> None: ...

    def study_end(self, status: str) -> None: ...


# ------------------------------------------------------------------ the study

@dataclass
class _Planned:
    run: StudyRun
    config: RunConfig
    path: Path
    state: str  # new | restart | resume | done
    epochs_done: int = 0


class Study:
    """A grid of runs in `out`. `check()` validates everything (no side effects), `run()`
    trains what is missing, `summarise()` writes the tables; `stop()` (any thread) ends the
    current run at its next epoch boundary, resumable."""

    def __init__(self, base: RunConfig, grid: StudyGrid, out: str | os.PathLike,
                 command: str | None = None):
        p = base.pruning
        if p.adaptive_bn_batches or p.mask_bn:
            raise ConfigError("config: pruning.adaptive_bn_batches / pruning.mask_bn are set in "
                              "the base configuration; name remedies in the grid instead")
        self.base = base
        self.grid = grid
        self.out = Path(out)
        self.command = command
        self.runs = grid.runs()
        self.configs = {r.name: r.config(base, grid.adaptive_bn_batches) for r in self.runs}
        self._stop = threading.Event()
        self._handle = None
        self._dataset = None

    # -------------------------------------------------------------- checks

    def check(self) -> list[_Planned]:
        """Validate the data and every existing run folder; the plan. Creates nothing."""
        from .data import load_dataset
        from .store import RunDirError

        if self.out.exists() and not self.out.is_dir():
            raise RunDirError(f"out: {str(self.out)!r} is a file; expected a folder")
        if self._dataset is None:  # a missing file fails here, not in the first run
            self._dataset = load_dataset(self.base.data)
        return [self._plan_one(r) for r in self.runs]

    def _plan_one(self, run: StudyRun) -> _Planned:
        from .store import RunDirError, check_only_run_entries, load_run, recorded_entries, writer_alive

        config = self.configs[run.name]
        path = self.out / run.name
        if path.exists() and not path.is_dir():
            raise RunDirError(f"out: {str(path)!r} is a file where the study keeps a run folder")
        if path.is_dir() and writer_alive(path):
            raise RunDirError(f"out: {str(path)!r} is being written by another process "
                              "(a second study on the same folder?); wait for it or use "
                              "another --out")
        if not recorded_entries(path):
            return _Planned(run, config, path, "new")
        check_only_run_entries(path)  # never delete or resume what a run did not write
        if not (path / "config.json").is_file():
            return _Planned(run, config, path, "restart")  # died before recording anything
        saved = load_run(path)
        try:  # fields added since that run was written take their defaults
            have = json.loads(json.dumps(RunConfig.from_dict(saved.config).to_dict()))
        except (ValueError, TypeError):
            have = saved.config
        diff = _first_difference(json.loads(json.dumps(config.to_dict())), have)
        if diff:
            raise RunDirError(f"out: {str(path)!r} holds a run with {diff}; use another --out, "
                              "or the options that run was started with")
        epochs = saved.metrics[-1]["epoch"] if saved.metrics else 0
        if saved.status in DONE_STATUSES:
            return _Planned(run, config, path, "done", epochs)
        # The engine resumes from the checkpoint, or starts again from the saved config when
        # the run stopped before its first one.
        return _Planned(run, config, path, "resume", _checkpoint_epoch(saved))

    # -------------------------------------------------------------- running

    def stop(self) -> None:
        """End the study at the current run's next epoch boundary (thread-safe)."""
        self._stop.set()
        handle = self._handle
        if handle is not None:
            handle.stop()

    def run(self, progress: StudyProgress | None = None) -> str:
        """Train every run not done yet; returns finished | stopped | failed.

        A run that fails stops the study (the next would most likely fail alike); a diverged
        run is a result and the study goes on.
        """
        progress = progress or StudyProgress()
        plan = self.check()
        todo = [p for p in plan if p.state != "done"]
        self.out.mkdir(parents=True, exist_ok=True)
        if todo:
            self._record_session(len(todo))
        total = sum(p.config.training.epochs for p in plan)
        done_epochs = sum(p.config.training.epochs if p.state == "done" else p.epochs_done
                          for p in plan)
        progress.study_start(self.runs, len(plan) - len(todo), done_epochs, total)
        status = "failed"  # until the loop says otherwise (an exception, Ctrl-C while building)
        try:
            status = self._train(plan, todo, progress)
        finally:
            progress.study_end(status)
        return status

    def _train(self, plan: list[_Planned], todo: list[_Planned],
               progress: StudyProgress) -> str:
        from .engine import RunHandle

        for p in todo:
            if self._stop.is_set():
                return "stopped"
            index = plan.index(p)
            if p.state == "resume":  # the engine's resume: from the checkpoint, as train --resume
                handle = RunHandle(None, p.path, resume=True, dataset=self._dataset)
            else:
                handle = RunHandle(p.config, p.path, overwrite=p.state == "restart",
                                   dataset=self._dataset)
            handle.trainer.add_observer(_Forward(progress))
            self._handle = handle
            if self._stop.is_set():  # stop() came while the handle was being built
                handle.stop()
            progress.run_start(index, p.run, handle.epoch)
            try:
                run_status = handle.run()
            finally:
                self._handle = None
            progress.run_end(index, p.run, run_status)
            if run_status in ("stopped", "failed"):
                return run_status
        return "finished"

    def _record_session(self, runs_to_train: int) -> None:
        """study.json: the grid, the base config and every session that trained."""
        from .store import atomic_write_json

        path = self.out / "study.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        record.setdefault("sessions", []).append({
            "date": _now(), "command": self.command, "runs_to_train": runs_to_train,
            "machine": machine_info()})
        record["grid"] = _grid_dict(self.grid)
        record["base_config"] = self.base.to_dict()
        atomic_write_json(path, record)

    # -------------------------------------------------------------- summary

    def summarise(self) -> dict[str, Any]:
        """Write summary.json, summary.md and compare.html for the runs of the grid."""
        from .store import atomic_write_bytes, atomic_write_json, load_run
        from .viz.compare import compare_html

        if self._dataset is None:
            self.check()
        rows, finished = [], []
        for method, ratio, remedy in self.grid.cells():
            members = [r for r in self.runs
                       if (r.method, r.ratio, r.remedy) == (method, ratio, remedy)]
            loaded = [load_run(self.out / r.name) for r in members
                      if (self.out / r.name / "config.json").is_file()]
            done = [d for d in loaded if d.status == "finished"]
            finished += done
            statuses = {r.name: "not started" for r in members}
            statuses.update({d.path.name: d.status for d in loaded})
            rows.append(_group_row(method, ratio, remedy, members, done, statuses))
        study_path = self.out / "study.json"
        record = json.loads(study_path.read_text()) if study_path.is_file() else {}
        data = self._dataset
        t = self.base.training
        summary = {
            "date": _now(),
            "runs_planned": len(self.runs),
            "runs_finished": len(finished),
            "sizes": {"model": self.base.model.name, "data": self.base.data.name,
                      "train_images": int(len(data.y_train)),
                      "train_subset": self.base.data.train_subset,
                      "test_images": int(len(data.y_test)), "epochs": t.epochs,
                      "batch_size": self.base.data.batch_size, "lr": t.lr,
                      "lr_milestone_epochs": t.milestone_epochs(),
                      "adaptive_bn_batches": self.grid.adaptive_bn_batches},
            "grid": _grid_dict(self.grid),
            "sessions": record.get("sessions", []),
            "machine": machine_info(),
            "std": "population standard deviation over seeds (numpy ddof=0), as in compare",
            "groups": rows,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "summary.json", summary)
        atomic_write_bytes(self.out / "summary.md", summary_markdown(summary).encode())
        if finished:
            labels = list(dict.fromkeys(
                _group_label(r) for r in self.runs
                if any(d.path.name == r.name for d in finished)))
            compare_html(finished, self.out / "compare.html", labels)
        return summary


class _Forward:
    """Engine observer handing events to the study's progress display."""

    __name__ = "StudyProgress"

    def __init__(self, progress: StudyProgress):
        self.progress = progress

    def __call__(self, event) -> None:
        self.progress.event(event)


def _checkpoint_epoch(saved) -> int:
    from .store import load_checkpoint

    if not (saved.path / "checkpoint.pt").exists():
        return 0
    return int(load_checkpoint(saved.path)["epoch"])


def _first_difference(want: Mapping[str, Any], have: Mapping[str, Any], prefix: str = "") -> str:
    """'section.field=have (the study asks want)' for the first field that differs, or ''."""
    for key in sorted(set(want) | set(have)):
        a, b = want.get(key), have.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            d = _first_difference(a, b, f"{prefix}{key}.")
            if d:
                return d
        elif a != b:
            return f"{prefix}{key}={b!r} (the study asks {a!r})"
    return ""


def _group_label(run: StudyRun) -> str:
    return run.group


def _grid_dict(grid: StudyGrid) -> dict[str, Any]:
    return {"methods": list(grid.methods), "ratios": list(grid.ratios),
            "seeds": list(grid.seeds), "remedies": list(grid.remedies),
            "remedy_methods": None if grid.remedy_methods is None else list(grid.remedy_methods),
            "adaptive_bn_batches": grid.adaptive_bn_batches}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------ per-run numbers

def run_numbers(run) -> dict[str, float | None]:
    """The summary's numbers of one run (fractions and counts; None where not recorded)."""
    m = run.metrics
    last = m[-1]
    dense = run.info.get("dense_macs")
    masked = [x["test_acc_masked"] for x in m[1:]
              if x.get("test_acc_masked") is not None and x.get("masks_updated", True)]
    dead = [x["dead_total"] for x in m if x.get("dead_total") is not None]
    revived = [sum(x["revived"].values()) if isinstance(x.get("revived"), Mapping)
               else x.get("revived_total") for x in m]
    return {
        "final_acc_masked": last.get("test_acc_masked"),
        "best_acc_masked": max(masked) if masked else None,
        "exact_macs_reduction": 1 - last["exact_macs"] / dense if dense else None,
        "paper_macs_reduction": 1 - last["paper_macs"] / dense if dense else None,
        "dead_final": last.get("dead_total"),
        "dead_max": max(dead) if dead else None,
        "revivals": None if any(r is None for r in revived) else int(sum(revived)),
        "acc_gap_final": last.get("acc_gap"),
        "wall_seconds": float(sum(x.get("epoch_seconds", 0.0) for x in m)),
    }


NUMBER_KEYS = ("final_acc_masked", "best_acc_masked", "exact_macs_reduction",
               "paper_macs_reduction", "dead_final", "dead_max", "revivals", "acc_gap_final",
               "wall_seconds")


def _group_row(method: str, ratio: float, remedy: str, members: Sequence[StudyRun],
               done: Sequence[Any], statuses: Mapping[str, str]) -> dict[str, Any]:
    import numpy as np

    per_run = {d.path.name: run_numbers(d) for d in done}
    stats = {}
    for key in NUMBER_KEYS:
        values = [v[key] for v in per_run.values() if v[key] is not None]
        stats[key] = ({"mean": float(np.mean(values)), "std": float(np.std(values)),
                       "n": len(values)} if values else None)
    return {"method": method, "ratio": ratio, "remedy": remedy, "n": len(done),
            "planned": len(members), "seeds": [int(d.config["training"]["seed"]) for d in done],
            "statuses": statuses, "runs": per_run, "stats": stats}


# ------------------------------------------------------------------ markdown

DASH = "–"


def _ms(stat: Mapping[str, float] | None, scale: float, fmt: str) -> str:
    if stat is None or not math.isfinite(stat["mean"]):
        return DASH
    text = format(stat["mean"] * scale, fmt)
    return text + (f" ± {format(stat['std'] * scale, fmt)}" if stat["n"] > 1 else "")


def _duration(stat: Mapping[str, float] | None) -> str:
    if stat is None:
        return DASH
    s = stat["mean"]
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The study's summary.md: the table, then sizes, machine, date and command."""
    head = ("| method | P | remedy | n | final acc % (masked) | best acc % (masked) | "
            "MACs −% exact | MACs −% paper | dead (end) | dead (max) | revivals | "
            "gap % (end) | wall / run |")
    lines = ["# Study summary", "",
             f"{summary['runs_finished']} of {summary['runs_planned']} runs finished; each cell "
             "is the mean ± std over the seeds that finished "
             "(population std, numpy ddof=0, as in `compare`). " + DASH + " = not recorded.",
             "", head, "|" + "---|" * 13]
    for g in summary["groups"]:
        s = g["stats"]
        n = f"{g['n']}" + (f" of {g['planned']}" if g["n"] != g["planned"] else "")
        lines.append("| " + " | ".join([
            g["method"], f"{g['ratio']:g}", g["remedy"], n,
            _ms(s["final_acc_masked"], 100, ".2f"), _ms(s["best_acc_masked"], 100, ".2f"),
            _ms(s["exact_macs_reduction"], 100, ".1f"), _ms(s["paper_macs_reduction"], 100, ".1f"),
            _ms(s["dead_final"], 1, ".1f"), _ms(s["dead_max"], 1, ".1f"),
            _ms(s["revivals"], 1, ".1f"), _ms(s["acc_gap_final"], 100, ".2f"),
            _duration(s["wall_seconds"])]) + " |")
    unfinished = [f"{name} ({status})" for g in summary["groups"]
                  for name, status in g["statuses"].items() if status != "finished"]
    if unfinished:
        lines += ["", "Not in the table (not finished): " + ", ".join(unfinished) + "."]
    z = summary["sizes"]
    subset = (f" (the first {z['train_subset']}, class-balanced)" if z["train_subset"] else "")
    m = summary["machine"]
    lines += [
        "", "Columns: accuracies after the final mask, on the test split; MACs reduction of the "
        "conv layers at the end, exact (what the masks remove) and in the paper's convention; "
        "dead = pruned filters still exactly zero (final epoch, and the most at any epoch); "
        "revivals = filters revived, summed over epochs; gap = unmasked − masked accuracy at "
        "the end, in points; wall = training time per run (sum of epoch times).",
        "", "## Sizes", "",
        f"- model {z['model']}, data set {z['data']}: {z['train_images']} training images"
        f"{subset}, {z['test_images']} test images",
        f"- {z['epochs']} epochs, batch {z['batch_size']}, lr {z['lr']:g} × gamma at epochs "
        f"{', '.join(map(str, z['lr_milestone_epochs']))}; adaptive BN: "
        f"{z['adaptive_bn_batches']} batches",
        "", "## Machine", "",
        f"- summarised on: {_machine_line(m)}"]
    for s in summary.get("sessions", []):
        lines.append(f"- trained {s['runs_to_train']} run(s) from {s['date']} on: "
                     f"{_machine_line(s['machine'])}")
    lines += ["", "## Date and command", "", f"- summary written {summary['date']}"]
    for s in summary.get("sessions", []):
        if s.get("command"):
            lines.append(f"- {s['date']}: `{s['command']}`")
    return "\n".join(lines) + "\n"


def _machine_line(m: Mapping[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (f"{m.get('cpu')} ({m.get('cores')} cores), torch {m.get('torch')} with "
            f"{m.get('torch_threads')} threads{gpu}")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and version, GPU (no paths, no host name)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
