"""The in-memory record of a run (`RunData`) and reading it back from a run directory.

Reading is strict: a file that is damaged, of the wrong kind or missing where the layout
needs it is a one-line `RunDirError` naming the file. Only a cut-off last line of a
JSON-lines file (a crash in the middle of an append) is tolerated, with a warning.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.events import EpochSnapshot, Event, EventKind
from .checksums import read_verified
from .errors import RunDirError
from .files import check_path_names, plain, read_json_object, read_jsonl, read_jsonl_lines
from .lock import writer_alive

CONFIG_SECTIONS = ("data", "model", "pruning", "training")
RUN_START_KEYS = ("layer_names", "layer_sizes", "input_size", "num_classes")


@dataclass
class RunData:
    """One run, live or loaded: the same structure either way.

    `metrics[i]`, `norms[i]` and `masks[i]` describe the same epoch (metrics[i]["epoch"]).
    `config` is the configuration as it stands now (the start, config.json, with every
    recorded parameter change applied); `changes` lists those changes.
    """

    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # run_start.json
    environment: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    norms: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    masks: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def layer_names(self) -> list[str]:
        return list(self.info.get("layer_names", ()))

    @property
    def status(self) -> str:
        return self.summary.get("status", "running" if self.metrics else "created")

    @property
    def name(self) -> str:
        return self.path.name if self.path else self.summary.get("name", "run")

    @property
    def changes(self) -> list[dict[str, Any]]:
        """Parameter changes in order: {"epoch": completed epochs, "changes": {section: {...}}}."""
        return [{"epoch": e["epoch"], "changes": e["changes"]} for e in self.events
                if e.get("event") == EventKind.PARAMETERS_CHANGED.value]

    def column(self, key: str) -> np.ndarray:
        """One metric over epochs as a float array (None -> NaN)."""
        return np.array([np.nan if m.get(key) is None else m[key] for m in self.metrics], float)

    def apply(self, event: Event) -> None:
        """Fold one engine event into the record (the recorder and live views use this)."""
        if event.kind is EventKind.RUN_START:
            d = plain(event.data)
            self.config = d.pop("config")
            if d.get("resumed"):
                self.truncate(event.epoch)
                # The checkpoint's config: a change recorded after it was lost with the epoch.
                self.events.append({"event": "resumed", "epoch": event.epoch,
                                    "config": self.config})
            self.info = d
            self.summary = {**self.summary, "status": "running"}
        elif event.kind is EventKind.EPOCH_END:
            snap: EpochSnapshot = event.data
            self.metrics.append(snap.metrics())
            self.norms.append(snap.norms)
            self.masks.append(snap.masks)
            self.summary = {**self.summary, **summarise(self), "status": "running"}
        elif event.kind is EventKind.PARAMETERS_CHANGED:
            self.config = plain(event.data["config"])
            self.events.append({"event": event.kind.value, "epoch": event.epoch,
                                "changes": plain(event.data["changes"]),
                                "config": self.config})
            self.summary = {**self.summary, **summarise(self)}
        elif event.kind is EventKind.RUN_END:
            self.events.append({"event": event.kind.value, "epoch": event.epoch,
                                **dict(event.data)})
            self.summary = {**self.summary, **summarise(self), "status": event.data["status"],
                            "message": event.data["message"]}

    def truncate(self, epoch: int) -> None:
        """Forget epochs after `epoch` (a resumed run recomputes them)."""
        keep = sum(1 for m in self.metrics if m["epoch"] <= epoch)
        del self.metrics[keep:], self.norms[keep:], self.masks[keep:]


def summarise(run: RunData) -> dict[str, Any]:
    """summary.json's numbers, the current config and the parameter changes."""
    out: dict[str, Any] = {"config": run.config, "changes": run.changes} if run.config else {}
    if not run.metrics:
        return out
    last = run.metrics[-1]
    masked = [m["test_acc_masked"] for m in run.metrics[1:]
              if m.get("masks_updated") and m.get("test_acc_masked") is not None]
    dense = run.info.get("dense_macs")
    return {
        **out,
        "epochs_done": last["epoch"],
        "total_epochs": last["total_epochs"],
        "final_test_acc_masked": last["test_acc_masked"],
        "best_test_acc_masked": max(masked) if masked else None,
        "final_prune_ratio": last["prune_ratio"],
        "dense_macs": dense,
        "final_exact_macs": last["exact_macs"],
        "exact_macs_reduction": 1 - last["exact_macs"] / dense if dense else None,
        "final_paper_macs": last["paper_macs"],
        "paper_macs_reduction": 1 - last["paper_macs"] / dense if dense else None,
        "final_exact_params": last["exact_params"],
        "dense_params": run.info.get("dense_params"),
        "train_seconds": float(sum(m["epoch_seconds"] for m in run.metrics)),
        "prune_seconds": float(sum(m["prune_seconds"] for m in run.metrics)),
    }


# ------------------------------------------------------------------ reading

def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read any run directory (finished, stopped, interrupted or still being written).

    A run whose summary says "running" but whose writer is gone reads as "interrupted".
    """
    p = _run_dir(run_dir)
    run = _read_head(p, summary_required=False)
    rows = _read_metrics(p)
    for m in rows:
        norms, masks = read_layer_file(p, m["epoch"], run.info["layer_sizes"])
        run.metrics.append(m)
        run.norms.append(norms)
        run.masks.append(masks)
    if run.summary.get("status", "running") == "running" and not writer_alive(p):
        last = run.metrics[-1]["epoch"] if run.metrics else None
        run.summary = {**run.summary, "status": "interrupted",
                       "message": "the writing process ended without closing the run (killed?)"
                                  + (f" after epoch {last}; resume it with --resume"
                                     if last is not None else "")}
    return run


def load_for_resume(run_dir: str | os.PathLike, checkpoint_epoch: int) -> tuple[RunData, list[str]]:
    """The record up to the checkpoint's epoch, and the raw metrics lines to keep.

    Everything the checkpoint covers must be intact; lines and layer files after it (the
    epoch a crash interrupted) are the only part a resume may drop. Anything else that does
    not fit is refused with one line saying what is inconsistent.
    """
    p = _run_dir(run_dir)
    run = _read_head(p, summary_required=True)
    rows = _read_metrics(p, with_lines=True)
    last = rows[-1][0]["epoch"] if rows else -1
    metrics_file = p / "metrics.jsonl"
    if last < checkpoint_epoch:
        raise RunDirError(f"{metrics_file}: records epochs up to {last} but checkpoint.pt is "
                          f"at epoch {checkpoint_epoch}; epochs {last + 1}..{checkpoint_epoch} "
                          "are missing, so the record cannot be continued")
    if not (p / "layers").is_dir():
        raise RunDirError(f"{p / 'layers'}: missing; the per-epoch layer files of epochs "
                          f"0..{checkpoint_epoch} are needed to continue the run")
    kept = []
    for m, line in rows[: checkpoint_epoch + 1]:
        norms, masks = read_layer_file(p, m["epoch"], run.info["layer_sizes"])
        run.metrics.append(m)
        run.norms.append(norms)
        run.masks.append(masks)
        kept.append(line)
    return run, kept


def _run_dir(run_dir: str | os.PathLike) -> Path:
    p = check_path_names("run_dir", run_dir)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise RunDirError(f"run_dir: {str(p)!r} is not a run directory (no config.json)")
    return p


def _read_head(p: Path, summary_required: bool) -> RunData:
    run = RunData(path=p)
    start = read_config_file(p / "config.json")
    run.environment = read_json_object(p / "environment.json")
    run.info = read_json_object(p / "run_start.json")
    missing = [k for k in RUN_START_KEYS if k not in run.info]
    if missing:
        raise RunDirError(f"{p / 'run_start.json'}: lacks {', '.join(missing)}")
    run.events = read_jsonl(p / "events.jsonl")
    run.summary = read_json_object(p / "summary.json", required=summary_required)
    run.config = current_config(start, run.events, p / "events.jsonl")
    return run


def read_config_file(path: Path) -> dict[str, Any]:
    """config.json: an object with the four sections that RunConfig accepts."""
    from ..config import ConfigError, RunConfig

    d = read_json_object(path)
    missing = [s for s in CONFIG_SECTIONS if s not in d]
    if missing:
        raise RunDirError(f"{path}: lacks the section(s) {', '.join(missing)}; expected "
                          f"{', '.join(CONFIG_SECTIONS)}")
    try:
        RunConfig.from_dict(d)
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None
    return d


def current_config(start: dict[str, Any], events: list[dict], where: Path) -> dict[str, Any]:
    """The start config with the recorded changes applied (a resume restores its
    checkpoint's config, which every event since carries)."""
    from ..config import ConfigError, RunConfig

    config = start
    for i, e in enumerate(events):
        if e.get("event") not in ("parameters_changed", "resumed"):
            continue
        if isinstance(e.get("config"), dict):
            config = e["config"]
        elif e.get("event") == "parameters_changed":  # written before events carried configs
            try:
                config = plain(RunConfig.from_dict(config).with_changes(**e["changes"]).to_dict())
            except (ConfigError, KeyError, TypeError) as err:
                raise RunDirError(f"{where}: event {i + 1} is not a valid parameter change "
                                  f"({err})") from None
    return config


def _read_metrics(p: Path, with_lines: bool = False) -> list:
    path = p / "metrics.jsonl"
    rows = read_jsonl_lines(path)
    for i, (m, _) in enumerate(rows):
        epoch = m.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise RunDirError(f"{path}: line {i + 1} has no integer 'epoch'")
        if epoch != i:
            raise RunDirError(f"{path}: line {i + 1} is epoch {epoch}, expected {i} (epochs "
                              "are recorded in order from 0)")
        for key in ("total_epochs", "prune_ratio", "exact_macs", "paper_macs",
                    "epoch_seconds", "prune_seconds"):
            if key not in m:
                raise RunDirError(f"{path}: line {i + 1} lacks {key!r}")
    return rows if with_lines else [m for m, _ in rows]


def layer_file(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / "layers" / f"{epoch:06d}.npz"


def read_layer_file(run_dir: Path, epoch: int, sizes: list[int]) -> tuple[tuple, tuple]:
    """(norms, masks) per layer of one epoch, checked against its sha256 and the layer sizes."""
    f = layer_file(run_dir, epoch)
    if not f.exists():
        raise RunDirError(f"{f}: missing, but metrics.jsonl records epoch {epoch}")
    data = read_verified(f)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            got_sizes, norms, masks = z["sizes"], z["norms"], z["masks"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise RunDirError(f"{f}: not a readable layer file ({type(e).__name__})") from None
    total = int(sum(sizes))
    if (list(map(int, got_sizes)) != list(sizes) or norms.shape != (total,)
            or masks.shape != (total,) or masks.dtype != bool):
        raise RunDirError(f"{f}: its arrays do not match the run's {len(sizes)} layers "
                          f"({total} filters)")
    cuts = np.cumsum(sizes)[:-1]
    return tuple(np.split(norms, cuts)), tuple(np.split(masks, cuts))
