"""A run handle: one training run, in the foreground or a background thread.

Pause, resume and stop act at epoch boundaries; `update()` queues schedule changes that take
effect at the next boundary and are recorded as PARAMETERS_CHANGED events, so a run steered
by hand can be reproduced.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from torch import nn

from .. import model_registry
from ..config import ConfigError, RunConfig
from ..data import Dataset
from ..store import (
    RunDirError,
    RunLock,
    RunRecorder,
    check_against_model,
    check_folder_path,
    check_only_run_entries,
    clear_run_dir,
    load_checkpoint,
    load_for_resume,
    read_config_file,
    recorded_entries,
    remove_stale_temp_files,
)
from .events import Observer
from .trainer import Control, Trainer, validate_changes


class RunHandle(Control):
    """Build with a config (and optionally a run directory), then `run()` or `start()`.

    `resume=True` continues the run in `run_dir` from its last checkpoint (a run stopped
    before its first checkpoint starts again from its saved config); `changes` (changeable
    fields only, e.g. {"training": {"lr": 0.01}}) apply from the first resumed epoch and are
    recorded as a parameter change. `overwrite=True` replaces an existing run directory, and
    only one: after the new run's device, data and model were built. Without either, an
    existing run directory is refused so that nothing saved is lost.
    """

    def __init__(
        self,
        config: RunConfig | None = None,
        run_dir: str | Path | None = None,
        observers: Iterable[Observer] = (),
        *,
        resume: bool = False,
        overwrite: bool = False,
        model: nn.Module | None = None,
        dataset: Dataset | None = None,
        changes: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self._lock = threading.Lock()
        self._training_from = -1  # epochs done when the epoch in training started (-1: none)
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Condition(self._lock)
        # Queued changes with the first epoch they apply to (see `queue_change`).
        self._queued: list[tuple[int, dict[str, Mapping[str, Any]]]] = []
        self.held = threading.Event()  # set while the training thread waits, paused, at a boundary
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.recorder = None
        self._file_lock = None
        self.restarted = False  # resume of a run stopped before its first checkpoint
        if config is not None and model is None:
            model_registry.check(config.model.name)  # unknown: one line, before any folder is touched
        try:
            config, state = self._open_run_dir(config, resume, overwrite)
            if config is None:
                raise ConfigError("config: a RunConfig is needed unless resuming a run directory")
            observers = ([self.recorder] if self.recorder else []) + list(observers)
            # Builds (and so validates) device, data and model before anything is deleted.
            self.trainer = Trainer(config, observers, model=model, dataset=dataset,
                                   checkpoint_path=self.run_dir / "checkpoint.pt" if self.run_dir else None,
                                   control=self)
            if state is not None:
                check_against_model(state, self.trainer.model, self.trainer.layer_sizes,
                                    config.training.epochs, self.run_dir / "checkpoint.pt")
                self.trainer.load_checkpoint_state(state)
            elif self.run_dir is not None and (overwrite or self.restarted):
                clear_run_dir(self.run_dir)
            if changes:
                if state is None:
                    raise ConfigError("resume: the run has no checkpoint yet, so it starts "
                                      "again from its saved config; give no changes")
                # Validated now; the trainer applies them before the first resumed epoch.
                validate_changes(self.trainer.config, changes, self.trainer.epoch)
                with self._lock:
                    self._queued.append((self.trainer.epoch + 1,
                                         {k: dict(v) for k, v in changes.items()}))
        except BaseException:
            self._release()
            raise

    def _open_run_dir(self, config: RunConfig | None, resume: bool, overwrite: bool):
        """Lock the run directory and check it; returns (config, checkpoint state or None).

        Deletes nothing: an overwrite or restart clears the folder only after the trainer
        has been built from the new config.
        """
        if self.run_dir is None:
            return config, None
        check_folder_path("run_dir" if resume else "out", self.run_dir)
        if resume and not (self.run_dir / "config.json").is_file():
            if not self.run_dir.is_dir():
                raise RunDirError(f"run_dir: {str(self.run_dir)!r} is not a run directory")
            raise RunDirError(f"run_dir: {str(self.run_dir)!r} has no config.json: the run "
                              "stopped before anything was recorded; start it again with the "
                              f"same flags and --out {str(self.run_dir)!r} --overwrite")
        if not resume and recorded_entries(self.run_dir) and not overwrite:
            raise RunDirError(f"out: {str(self.run_dir)!r} already holds a run; choose "
                              "another folder, or resume or overwrite it explicitly")
        self._file_lock = RunLock(self.run_dir)
        self._file_lock.acquire()
        remove_stale_temp_files(self.run_dir)  # a killed writer's; nobody else writes now
        if not resume:
            if overwrite and recorded_entries(self.run_dir):
                check_only_run_entries(self.run_dir)
            self.recorder = RunRecorder(self.run_dir)
            return config, None
        if not (self.run_dir / "checkpoint.pt").exists():
            # Stopped before its first checkpoint: nothing was trained, start it again.
            saved = RunConfig.from_dict(read_config_file(self.run_dir / "config.json"))
            check_only_run_entries(self.run_dir)
            self.restarted = True
            self.recorder = RunRecorder(self.run_dir)
            return self._same_model(config, saved), None
        state = load_checkpoint(self.run_dir)
        try:
            saved = RunConfig.from_dict(state["config"])
        except ConfigError as e:
            raise RunDirError(f"{self.run_dir / 'checkpoint.pt'}: its config is not valid "
                              f"({e})") from None
        record = load_for_resume(self.run_dir, int(state["epoch"]))
        self._warn_threads(record[0])
        self.recorder = RunRecorder(self.run_dir, resume_from=record)
        return self._same_model(config, saved), state

    @staticmethod
    def _same_model(given: RunConfig | None, saved: RunConfig) -> RunConfig:
        if given is not None and given.model != saved.model:
            raise ConfigError(f"model.name: {given.model.name!r} differs from the "
                              f"checkpoint's {saved.model.name!r}")
        return saved

    @staticmethod
    def _warn_threads(record) -> None:
        """A different thread count changes float summation order: say so before training."""
        import torch

        before = record.environment.get("cpu_threads")
        for e in record.events:
            if e.get("event") == "resumed" and "cpu_threads" in e:
                before = e["cpu_threads"]
        now = torch.get_num_threads()
        if before is not None and before != now:
            warnings.warn(f"resume: this process uses {now} CPU threads, the run so far used "
                          f"{before}; results will not be bit-identical to an uninterrupted "
                          f"run (set OMP_NUM_THREADS={before} to match)", RuntimeWarning,
                          stacklevel=3)

    # -------------------------------------------------------------- running

    def run(self) -> str:
        """Train in this thread; returns the final status."""
        try:
            return self.trainer.run()
        finally:
            self._release()

    def start(self) -> "RunHandle":
        """Train in a background thread (the notebook kernel stays responsive)."""
        if self._thread is not None:
            raise RuntimeError("run: already started; a handle runs once")

        def target() -> None:
            try:
                self.trainer.run()
            except BaseException as e:  # reported through RUN_END and kept for the caller
                self.error = e
            finally:
                self._release()

        self._thread = threading.Thread(target=target, name="asfp-train", daemon=True)
        self._thread.start()
        return self

    def add_observer(self, observer: Observer) -> None:
        """Watch the run's events too (on the training thread; see `engine.events`)."""
        self.trainer.add_observer(observer)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the background run ends (or `timeout` seconds); returns the status."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def _release(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()

    # -------------------------------------------------------------- steering

    @property
    def status(self) -> str:
        s = self.trainer.status
        return "paused" if s == "running" and self._paused.is_set() else s

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    @property
    def config(self) -> RunConfig:
        """The configuration including changes still queued."""
        with self._lock:
            cfg = self.trainer.config
            for _, ch in self._queued:
                cfg = cfg.with_changes(**ch)
            return cfg

    @property
    def device(self) -> str:
        """Where the run trains, e.g. 'cpu' or 'cuda:0'."""
        return str(self.trainer.device)

    def trained_model(self) -> "TrainedModel":
        """The model, its current masks, input size and device, for export once the run has
        ended (while it trains, the weights change under the caller: refused)."""
        if self.status in ("running", "paused"):
            raise RuntimeError("trained_model: the run is still going; wait for it or stop it")
        t = self.trainer
        return TrainedModel(t.model, dict(t.pruning.masks), tuple(t.data.input_size),
                            str(t.device))

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        with self._wake:
            self._paused.clear()
            self._wake.notify_all()

    def stop(self) -> None:
        """Stop at the next epoch boundary (the run stays resumable)."""
        with self._wake:
            self._stop.set()
            self._wake.notify_all()

    def update(self, **sections: Mapping[str, Any]) -> RunConfig:
        """Queue changes, e.g. `update(pruning={"prune_ratio": 0.5})`; validated now,
        applied at the next epoch boundary. Returns the config they lead to."""
        new = validate_changes(self.config, sections, self.trainer.epoch)
        self.queue_change(**sections)
        return new

    def queue_change(self, **sections: Mapping[str, Any]) -> int:
        """Queue validated changes; returns N, the first epoch trained with them (the metrics
        line `epoch N` is the first that shows them). The run applies them exactly there.

        With e epochs done, N = e + 1 unless epoch e + 1 is already training (its changes
        were taken at the boundary and its count not yet raised): then N = e + 2. Between
        epochs (paused, or in an epoch-end observer) that is e + 1. Read under the boundary's
        lock, so the answer holds.
        """
        validate_changes(self.config, sections, self.trainer.epoch)
        with self._lock:
            done = self.trainer.epoch
            first = done + 2 if self._training_from == done else done + 1
            self._queued.append((first, {k: dict(v) for k, v in sections.items()}))
        return first

    # Control interface, called by the trainer at each epoch boundary.

    def at_boundary(self, epochs_completed: int) -> bool:
        with self._wake:
            while self._paused.is_set() and not self._stop.is_set():
                self.held.set()
                self._wake.wait(timeout=0.5)
            self.held.clear()
        return not self._stop.is_set()

    def take_changes(self) -> list[dict[str, Mapping[str, Any]]]:
        """Changes whose first epoch is the one about to be trained (see `queue_change`)."""
        with self._lock:
            upcoming = self.trainer.epoch + 1
            self._training_from = self.trainer.epoch  # epoch `upcoming` starts training now
            out = [ch for first, ch in self._queued if first <= upcoming]
            self._queued = [(first, ch) for first, ch in self._queued if first > upcoming]
        return out


class TrainedModel(NamedTuple):
    """What export needs from a run: the (masked) model, masks per layer, input (C, H, W)."""

    model: nn.Module
    masks: dict[str, Any]
    input_size: tuple[int, ...]
    device: str
