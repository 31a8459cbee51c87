"""Run directories: written atomically while a run trains, read back into `RunData`.

    RUN_DIR/
      config.json        resolved configuration at the start
      environment.json   versions, device, git revision, seed
      run_start.json     layer names and widths, input size, dense MACs (analytic and fvcore)
      metrics.jsonl      one JSON object per epoch (epoch 0 = the initial masks)
      layers/NNNNNN.npz  per epoch: ℓ2 filter norms and kept masks of every prunable layer
      events.jsonl       parameter changes and the run's end
      summary.json       status (running|finished|stopped|diverged|failed) and final numbers
      checkpoint.pt      state_dicts, masks and RNG states (tensors only: weights_only=True)
      lock               pid of the process writing the run

Every file is replaced atomically (temporary file, flush, fsync, rename) and metrics.jsonl
grows a whole line at a time, so a crash loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .engine.events import EpochSnapshot, Event, EventKind

FILES = ("config.json", "environment.json", "run_start.json", "metrics.jsonl", "events.jsonl",
         "summary.json", "checkpoint.pt")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message is one line."""


# ------------------------------------------------------------------ atomic writes

def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def append_line(path: Path, obj: Any) -> None:
    """Append one JSON line with a single write, flushed to disk."""
    line = json.dumps(obj, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Mapping):
        return dict(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _plain(obj: Any) -> Any:
    """The JSON form of `obj` (tuples become lists), so live and loaded records compare equal."""
    return json.loads(json.dumps(obj, default=_json_default))


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line; a cut-off last line (a crash mid-write) is dropped with a warning."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        try:
            if not line.endswith("\n"):
                raise ValueError("no newline")
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                warnings.warn(f"{path.name}: the last line is incomplete (a crash while "
                              f"writing?); loaded the {len(rows)} complete lines", RuntimeWarning)
                break
            raise RunDirError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


# ------------------------------------------------------------------ the in-memory run

@dataclass
class RunData:
    """One run, live or loaded: the same structure either way.

    `metrics[i]`, `norms[i]` and `masks[i]` describe the same epoch (metrics[i]["epoch"]).
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

    def column(self, key: str) -> np.ndarray:
        """One metric over epochs as a float array (None -> NaN)."""
        return np.array([np.nan if m.get(key) is None else m[key] for m in self.metrics], float)

    def apply(self, event: Event) -> None:
        """Fold one engine event into the record (the recorder and live views use this)."""
        if event.kind is EventKind.RUN_START:
            d = _plain(event.data)
            self.config = d.pop("config")
            if d.get("resumed"):
                self.truncate(event.epoch)
                self.events.append({"event": "resumed", "epoch": event.epoch})
            self.info = d
            self.summary = {**self.summary, "status": "running"}
        elif event.kind is EventKind.EPOCH_END:
            snap: EpochSnapshot = event.data
            self.metrics.append(snap.metrics())
            self.norms.append(snap.norms)
            self.masks.append(snap.masks)
            self.summary = {**self.summary, **_summarise(self), "status": "running"}
        elif event.kind is EventKind.PARAMETERS_CHANGED:
            self.config = _plain(event.data["config"])
            self.events.append({"event": event.kind.value, "epoch": event.epoch,
                                "changes": _plain(event.data["changes"])})
        elif event.kind is EventKind.RUN_END:
            self.events.append({"event": event.kind.value, "epoch": event.epoch,
                                **dict(event.data)})
            self.summary = {**self.summary, **_summarise(self), "status": event.data["status"],
                            "message": event.data["message"]}

    def truncate(self, epoch: int) -> None:
        """Forget epochs after `epoch` (a resumed run recomputes them)."""
        keep = sum(1 for m in self.metrics if m["epoch"] <= epoch)
        del self.metrics[keep:], self.norms[keep:], self.masks[keep:]


def _summarise(run: RunData) -> dict[str, Any]:
    if not run.metrics:
        return {}
    last = run.metrics[-1]
    masked = [m["test_acc_masked"] for m in run.metrics[1:] if m.get("masks_updated")]
    dense = run.info.get("dense_macs")
    return {
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


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read any run directory (finished, stopped or still being written)."""
    p = Path(run_dir)
    if not (p / "config.json").is_file():
        raise RunDirError(f"run_dir: {str(p)!r} is not a run directory (no config.json)")
    run = RunData(path=p)
    run.config = _read_json(p / "config.json")
    run.environment = _read_json(p / "environment.json", {})
    run.info = _read_json(p / "run_start.json", {})
    run.events = read_jsonl(p / "events.jsonl")
    run.summary = _read_json(p / "summary.json", {})
    for m in read_jsonl(p / "metrics.jsonl"):
        f = p / "layers" / f"{m['epoch']:06d}.npz"
        if not f.exists():
            break  # the metrics line landed but its layer file did not: a crash in between
        with np.load(f, allow_pickle=False) as z:
            sizes = z["sizes"]
            cuts = np.cumsum(sizes)[:-1]
            run.norms.append(tuple(np.split(z["norms"], cuts)))
            run.masks.append(tuple(np.split(z["masks"], cuts)))
        run.metrics.append(m)
    return run


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        if default is not None:
            return default
        raise RunDirError(f"{path}: missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise RunDirError(f"{path}: not valid JSON (damaged?)") from None


# ------------------------------------------------------------------ the recorder

class RunRecorder:
    """Observer that writes a run directory and keeps the same `RunData` in memory."""

    def __init__(self, run_dir: str | os.PathLike, environment: Mapping[str, Any] | None = None):
        self.path = Path(run_dir)
        self.run = RunData(path=self.path)
        self.environment = dict(environment or {})
        self.__name__ = "RunRecorder"

    def __call__(self, event: Event) -> None:
        p = self.path
        if event.kind is EventKind.RUN_START and event.data.get("resumed"):
            self.run = load_run(p)
        self.run.apply(event)
        if event.kind is EventKind.RUN_START:
            (p / "layers").mkdir(parents=True, exist_ok=True)
            if event.data.get("resumed"):
                self._rewrite_metrics()
                append_line(p / "events.jsonl", self.run.events[-1])
            else:
                atomic_write_json(p / "config.json", self.run.config)
                atomic_write_json(p / "environment.json",
                                  {**environment_info(), "device": event.data["device"],
                                   "seed": self.run.config["training"]["seed"], **self.environment})
                atomic_write_json(p / "run_start.json", self.run.info)
        elif event.kind is EventKind.EPOCH_END:
            snap: EpochSnapshot = event.data
            atomic_savez(p / "layers" / f"{snap.epoch:06d}.npz",
                         sizes=np.array([len(n) for n in snap.norms]),
                         norms=np.concatenate(snap.norms).astype(np.float32),
                         masks=np.concatenate(snap.masks))
            append_line(p / "metrics.jsonl", snap.metrics())
            atomic_write_json(p / "summary.json", self.run.summary)
        elif event.kind in (EventKind.PARAMETERS_CHANGED, EventKind.RUN_END):
            append_line(p / "events.jsonl", self.run.events[-1])
            if event.kind is EventKind.RUN_END:
                atomic_write_json(p / "summary.json", self.run.summary)

    def _rewrite_metrics(self) -> None:
        """A resumed run drops lines beyond its checkpoint, then appends as usual."""
        text = "".join(json.dumps(m, default=_json_default) + "\n" for m in self.run.metrics)
        atomic_write_bytes(self.path / "metrics.jsonl", text.encode())
        for f in (self.path / "layers").glob("*.npz"):
            if int(f.stem) > (self.run.metrics[-1]["epoch"] if self.run.metrics else -1):
                f.unlink()


def environment_info() -> dict[str, Any]:
    """Versions and git revision (no paths of the machine)."""
    import sklearn
    import torch
    import torchvision

    from . import __version__

    info = {
        "asfp_explorer": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        info["git_revision"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_revision"] = None
    return info


# ------------------------------------------------------------------ checkpoints and locks

def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's checkpoint, loaded without unpickling arbitrary objects."""
    import torch

    f = Path(run_dir) / "checkpoint.pt"
    if not f.exists():
        raise RunDirError(f"run_dir: {str(run_dir)!r} has no checkpoint.pt (nothing to resume)")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RunDirError(f"{f}: cannot be loaded safely ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:160]}); it is truncated or was tampered with") from None


_HELD: set[Path] = set()  # locks this process holds (two runs of one notebook, same folder)


class RunLock:
    """`lock` file holding the writer's pid; a lock whose process is gone is taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "lock"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid == os.getpid() and self.path.resolve() in _HELD:
                    raise RunDirError(f"run_dir: {str(self.path.parent)!r} is being written by "
                                      "another run of this process; use another folder")
                if pid and pid != os.getpid() and _alive(pid):
                    raise RunDirError(f"run_dir: {str(self.path.parent)!r} is being written by "
                                      f"process {pid}; use another --out") from None
                self.path.unlink(missing_ok=True)  # a dead writer's lock
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            _HELD.add(self.path.resolve())
            return
        raise RunDirError(f"run_dir: could not take {str(self.path)!r}")

    def release(self) -> None:
        try:
            if self.path.read_text().strip() == str(os.getpid()):
                _HELD.discard(self.path.resolve())
                self.path.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_model(run_dir: str | os.PathLike):
    """The run's model as it stands at its checkpoint (masked), with its masks and input size.

    Returns `(model in eval mode, {layer: bool mask}, (C, H, W))`; built-in models only.
    """
    from .config import RunConfig
    from .models import build_model

    run = load_run(run_dir)
    state = load_checkpoint(run_dir)
    config = RunConfig.from_dict(state["config"])
    info = run.info
    model = build_model(config.model.name, info["num_classes"], info["input_size"][0])
    model.load_state_dict(state["model"])
    masks = {n: m.bool() for n, m in state["pruning"]["masks"].items()}
    return model.eval(), masks, tuple(info["input_size"])
