"""The training loop, written out once.

    emit RUN_START
    e = 0:  masks at P(0), zero them; evaluate                 -> MASKS_UPDATED, EVALUATED, EPOCH_END
    for e in 1..T:
        at the boundary: wait while paused, stop if asked, apply queued parameter changes
                                                               -> PARAMETERS_CHANGED (if any)
        train one epoch (SGD; hard mode masks grads and weights around each step)
        if e is a mask epoch (every `interval`, and the last):
            evaluate unmasked; re-rank, recompute masks at P(e), zero
        evaluate (masked)
        one device-to-host copy of everything observers need; checkpoint
                                                               -> [EVALUATED unmasked], [MASKS_UPDATED],
                                                                  EVALUATED, EPOCH_END
    emit RUN_END (finished | stopped | diverged | failed)

Inside an epoch there is no host synchronisation: losses and correct counts accumulate in
device tensors. The host waits for the device once per epoch, at the marked `# sync:` line.
Observers run after that point, on the training thread, so they must return quickly (the
dashboard only queues the snapshot and draws elsewhere).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, RunConfig
from ..data import Dataset, load_dataset, make_loader
from ..flops import MacCounter, fvcore_conv_macs
from ..models import build_model, prunable_layers
from ..pruning.algorithm import FilterPruning
from ..pruning.batchnorm import batchnorms_after, recalibrate
from ..pruning.criteria import lp_norms
from ..schedules import prune_ratio_at, pruned_count
from ..store.files import atomic_torch_save
from . import distributed
from .events import EpochSnapshot, Event, EventKind, Observer, frozen, notify, readonly

# Fields a running run accepts at an epoch boundary; everything else fixes the run's identity.
CHANGEABLE = {
    "pruning": {"method", "prune_ratio", "d", "interval", "criterion", "fpgm_norm_share",
                "adaptive_bn_batches"},
    # lr is the base rate: from the change on, epochs train at lr x lr_gamma^(decays reached).
    "training": {"epochs", "lr"},
}


class Control:
    """What the trainer asks at each epoch boundary. The default never pauses or stops."""

    def at_boundary(self, epochs_completed: int) -> bool:
        """Block while paused; return False to stop."""
        return True

    def take_changes(self) -> list[dict[str, Mapping[str, Any]]]:
        """Parameter changes queued since the last boundary, oldest first."""
        return []


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' was asked for but no CUDA device is "
                          "available; allowed here: auto, cpu")
    return torch.device(name)


def lr_at(config: RunConfig, epoch_index: int) -> float:
    """Learning rate for the epoch that starts after `epoch_index` completed epochs.

    lr x lr_gamma^(decays), decays = milestones passed, but never fewer than
    `lr_decays_reached` (a change of the epochs during a run does not raise the rate again).
    The first epoch (index 0) runs at `first_epoch_lr`; by default lr / 10 for resnet110
    (spec §8; the authors' script: 0.01, x10 after epoch 0) and lr for every other model.
    """
    t = config.training
    if epoch_index == 0:
        if t.first_epoch_lr is not None:
            return t.first_epoch_lr
        if config.model.name == "resnet110":
            return t.lr / 10
    return t.lr * t.lr_gamma ** lr_decays(config, epoch_index)


def lr_decays(config: RunConfig, epoch_index: int) -> int:
    """How many times the rate has been multiplied by lr_gamma in epoch `epoch_index`."""
    t = config.training
    return max(t.lr_decays_reached, sum(epoch_index >= m for m in t.milestone_epochs()))


class Trainer:
    """Trains one model with soft/hard filter pruning and tells observers what happens.

    `model` and `dataset` may be given to train a user's own model or data; otherwise they are
    built from the config. With `run_dir`, a checkpoint is written after every epoch (the
    caller attaches a `store.RunRecorder` for the other files).
    """

    def __init__(
        self,
        config: RunConfig,
        observers: Iterable[Observer] = (),
        *,
        model: nn.Module | None = None,
        dataset: Dataset | None = None,
        checkpoint_path: str | Path | None = None,
        control: Control | None = None,
    ):
        self.config = config
        self.device = resolve_device(config.training.device)
        self.dist = distributed.current()  # torchrun: this rank's share of the work
        if self.dist is not None:
            self.device = self.dist.device(config.training.device)
        self.observers: list[Observer] = list(observers)
        self.observer_errors: list[str] = []
        self.control = control or Control()
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        torch.manual_seed(config.training.seed)
        data = dataset if dataset is not None else load_dataset(config.data)
        self.data = data.to(self.device)
        self.model = (model if model is not None else build_model(
            config.model.name, data.num_classes, data.input_size[0])).to(self.device)
        if model is None and config.model.weights:  # the "pretrained" variant (spec §8)
            from ..models.weights import load_weights

            load_weights(self.model, config.model.weights)
        self.convs = prunable_layers(self.model, data.input_size)
        self.layer_names = tuple(self.convs)
        self.layer_sizes = tuple(c.out_channels for c in self.convs.values())
        batchnorms = (batchnorms_after(self.model, self.layer_names, data.input_size)
                      if config.pruning.mask_bn else None)
        self.pruning = FilterPruning(self.convs, config.pruning, config.training.epochs, batchnorms)
        # Speed options beyond the paper's recipe (all off by default; see TrainingConfig).
        t = config.training
        self._bf16 = t.precision == "bf16"
        self._memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        if t.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._train_forward = torch.compile(self.model) if t.compile else self.model
        if self.dist is not None:
            self._train_forward = self.dist.wrap(self.model, self.device, t.sync_batchnorm)
        t = config.training
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum,
                                         nesterov=t.nesterov and t.momentum > 0,
                                         weight_decay=t.weight_decay)
        augment = self._augment = config.data.augment and data.name != "digits"
        # DeviceLoader for device-resident data; imagefolder streams from disk (DataLoader).
        self.train_loader = make_loader(self.data, "train", config.data.batch_size, True,
                                        augment, seed=t.seed)
        self.test_loader = make_loader(self.data, "test", max(config.data.batch_size, 256),
                                       False, False)
        if self.dist is not None:
            self.train_loader.shard(self.dist.rank, self.dist.world)
        self.macs = MacCounter(self.model, data.input_size)
        # Both trace the model, here before training; a trace never reaches other threads.
        self.fvcore_dense_macs = fvcore_conv_macs(self.model, data.input_size)
        self.epoch = 0  # epochs completed
        self.status = "created"
        self._resumed = False

    # ----------------------------------------------------------------- observers

    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)

    def _emit(self, kind: EventKind, data: Any) -> None:
        # A watching observer never stops training; the recorder (essential) ends the run.
        for msg in notify(self.observers, Event(kind, self.epoch, data)):
            self.observer_errors.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)

    # ----------------------------------------------------------------- the loop

    def run(self) -> str:
        """Train to the end (or until stopped); returns the final status."""
        self.status = "running"
        try:
            if not self._resumed:
                self._emit(EventKind.RUN_START, self._run_start_data())
                self._initial_masks()
            else:
                self._emit(EventKind.RUN_START, self._run_start_data(resumed=True))
                self._apply_changes()  # given with the resume: before the epoch count is tested
            while self.epoch < self.config.training.epochs:
                if not self.control.at_boundary(self.epoch):
                    self.status = "stopped"
                    break
                self._apply_changes()
                if self.epoch >= self.config.training.epochs:
                    break
                if not self._train_epoch():
                    break
            else:
                self.status = "finished"
        except KeyboardInterrupt:
            self.status = "stopped"  # the epoch in progress is dropped; the checkpoint stands
        except torch.cuda.OutOfMemoryError:
            self.status = "failed"
            self._end(f"out of GPU memory in epoch {self.epoch + 1} at batch size "
                      f"{self.config.data.batch_size}; try a smaller batch (e.g. "
                      f"--batch-size {max(1, self.config.data.batch_size // 2)}); the run "
                      f"is resumable from epoch {self.epoch}")
            return self.status
        except Exception as e:
            self.status = "failed"
            self._end(f"{type(e).__name__}: {e}")
            raise
        self._end(self._end_message())
        return self.status

    def _end_message(self) -> str:
        if self.status == "finished":
            return f"finished {self.epoch} epochs"
        if self.status == "stopped":
            return f"stopped after epoch {self.epoch}; resumable"
        return self._diverged_message

    def _end(self, message: str) -> None:
        self._emit(EventKind.RUN_END, frozen({"status": self.status, "message": message,
                                              "epoch": self.epoch}))

    def _run_start_data(self, resumed: bool = False) -> Mapping[str, Any]:
        return frozen({
            "config": self.config.to_dict(),
            "layer_names": self.layer_names,
            "layer_sizes": self.layer_sizes,
            "input_size": tuple(self.data.input_size),
            "num_classes": self.data.num_classes,
            "device": str(self.device),
            "dense_macs": self.macs.dense_macs,
            "dense_params": self.macs.dense_params,
            "fvcore_dense_macs": self.fvcore_dense_macs,
            "resumed": resumed,
            "start_epoch": self.epoch,
        })

    def _initial_masks(self) -> None:
        t0 = time.perf_counter()
        watch = _Stopwatch(self.device)
        norms = self.pruning.update_masks(0)
        if self.dist is not None:
            self.dist.check_masks(self.pruning.masks, 0)
        self._adapt_batchnorm()
        watch.stop()
        acc = self._evaluate()
        prev = {n: torch.ones_like(m) for n, m in self.pruning.masks.items()}
        self._finish_epoch(None, None, None, acc, norms, prev, True, t0, watch)

    def _train_epoch(self) -> bool:
        t0 = time.perf_counter()
        lr = lr_at(self.config, self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum, correct = self._iterations()
        if self.dist is not None:
            loss_sum, correct = self.dist.sum(loss_sum, correct)
        self.epoch += 1
        update = self.pruning.is_update_epoch(self.epoch)
        prev = dict(self.pruning.masks)
        acc_unmasked = watch = None
        if update:
            if self.config.training.eval_unmasked:
                acc_unmasked = self._evaluate()
            watch = _Stopwatch(self.device)
            norms = self.pruning.update_masks(self.epoch)
            if self.dist is not None:
                self.dist.check_masks(self.pruning.masks, self.epoch)
            self._adapt_batchnorm()
            watch.stop()
        else:
            norms = {n: lp_norms(c.weight, 2) for n, c in self.convs.items()}
        acc = self._evaluate()
        return self._finish_epoch(loss_sum, correct, acc_unmasked, acc, norms, prev, update, t0,
                                  watch)

    def _iterations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass over the training set; (loss sum, correct count) stay on the device."""
        model, opt = self._train_forward, self.optimizer
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for x, y in self.train_loader:
            with self._autocast():
                out = model(x.contiguous(memory_format=self._memory_format))
                loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            self.pruning.before_step()
            opt.step()
            self.pruning.after_step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (out.detach().argmax(1) == y).sum()
        return loss_sum, correct

    def _adapt_batchnorm(self) -> None:
        """Remedy `adaptive_bn_batches` (off by default): fresh BN statistics for the masks.

        The batches come from a loader with its own generator, seeded by run seed and epoch,
        so the training batches (and a resumed run) are exactly those of a run without it.
        """
        n = self.config.pruning.adaptive_bn_batches
        if n:
            loader = make_loader(self.data, "train", self.config.data.batch_size, True,
                                 self._augment,
                                 seed=self.config.training.seed * 100_003 + self.epoch + 1)
            recalibrate(self.model, loader, n)

    @torch.no_grad()
    def _evaluate(self) -> torch.Tensor:
        """Correct test predictions, as a device tensor (no sync)."""
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for x, y in self.test_loader:
            with self._autocast():
                out = self.model(x.contiguous(memory_format=self._memory_format))
            correct += (out.argmax(1) == y).sum()
        self.model.train()
        return correct

    def _autocast(self):
        """bfloat16 autocast when `training.precision` is bf16; a no-op context otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._bf16)

    def _finish_epoch(self, loss_sum, correct, acc_unmasked, acc, norms, prev, update, t0,
                      watch: "_Stopwatch | None") -> bool:
        masks = self.pruning.masks
        names = self.layer_names
        none = torch.full((1,), float("nan"), device=self.device)
        scalars = [
            loss_sum.view(1).float() if loss_sum is not None else none,
            correct.view(1).float() if correct is not None else none,
            acc_unmasked.view(1).float() if acc_unmasked is not None else none,
            acc.view(1).float(),
        ]
        revived = torch.stack([(~prev[n] & masks[n]).sum() for n in names]).float()
        packed = torch.cat(scalars + [revived] + [norms[n].float() for n in names]
                           + [masks[n].float() for n in names]
                           + [prev[n].float() for n in names])
        host = packed.cpu().numpy()  # sync: the one device-to-host copy per epoch
        prune_s = watch.seconds() if watch is not None else 0.0
        seconds = time.perf_counter() - t0
        n_train, n_test = len(self.data.y_train), len(self.data.y_test)
        loss, tcorrect, unmasked, masked = host[:4]
        k = len(names)
        revived_h = host[4:4 + k].astype(int)
        offs = np.cumsum((0,) + self.layer_sizes)
        base = 4 + k
        norms_h = tuple(readonly(host[base + offs[i]: base + offs[i + 1]]) for i in range(k))
        base += offs[-1]
        masks_h = tuple(readonly(host[base + offs[i]: base + offs[i + 1]] > 0.5) for i in range(k))
        base += offs[-1]
        prev_h = tuple(host[base + offs[i]: base + offs[i + 1]] > 0.5 for i in range(k))
        diag = _diagnostics(norms_h, prev_h)
        # What the masks hold, which can differ from the schedule (hard mode after a lowered
        # ratio, epochs between updates with interval > 1).
        pruned = tuple(int((~m).sum()) for m in masks_h)
        kept = {n: self.layer_sizes[i] - pruned[i] for i, n in enumerate(names)}
        scheduled = self.pruning.prune_ratio(self.epoch)
        realised = sum(pruned) / sum(self.layer_sizes)
        # Paper convention: the scheduled (fractional) ratio when the masks hold exactly its
        # counts, as in the published tables; otherwise the ratio the masks realise.
        on_schedule = all(p == pruned_count(self.layer_sizes[i], scheduled) for i, p in enumerate(pruned))
        paper_ratio = scheduled if on_schedule else realised
        # Between mask updates a soft-pruned model is not masked: its accuracy is unmasked.
        is_masked = update or self.config.pruning.mode == "hard"
        if not is_masked:
            unmasked, acc_unmasked = masked, acc
        snap = EpochSnapshot(
            epoch=self.epoch,
            total_epochs=self.config.training.epochs,
            lr=lr_at(self.config, max(self.epoch - 1, 0)),
            prune_ratio=scheduled,
            realised_ratio=realised,
            masks_updated=update,
            train_loss=None if loss_sum is None else float(loss / n_train),
            train_acc=None if correct is None else float(tcorrect / n_train),
            test_acc_unmasked=None if acc_unmasked is None else float(unmasked / n_test),
            test_acc_masked=float(masked / n_test) if is_masked else None,
            layer_names=names,
            norms=norms_h,
            masks=masks_h,
            pruned=pruned,
            revived=tuple(int(r) for r in revived_h),
            dead=diag["dead"],
            pruned_norm_median=diag["pruned_norm_median"],
            kept_norm_median=diag["kept_norm_median"],
            exact_macs=self.macs.exact_macs(kept),
            exact_params=self.macs.exact_params(kept),
            paper_macs=float(self.macs.paper_macs(paper_ratio)),
            epoch_seconds=seconds,
            prune_seconds=float(prune_s),
        )
        if snap.train_loss is not None and not math.isfinite(snap.train_loss):
            self.status = "diverged"
            self._diverged_message = (f"diverged: training loss became {snap.train_loss} in "
                                      f"epoch {self.epoch}; the checkpoint of epoch "
                                      f"{self.epoch - 1} is kept (try a lower learning rate)")
            self.epoch -= 1
            return False
        if snap.test_acc_unmasked is not None:
            self._emit(EventKind.EVALUATED, frozen({"masked": False, "test_acc": snap.test_acc_unmasked}))
        if update:
            self._emit(EventKind.MASKS_UPDATED, snap)
        if is_masked:
            self._emit(EventKind.EVALUATED, frozen({"masked": True, "test_acc": snap.test_acc_masked}))
        self._emit(EventKind.EPOCH_END, snap)
        # After the recorder has written the epoch: a crash in between leaves metrics one
        # epoch ahead of the checkpoint, and resuming drops that line and recomputes it.
        if self.checkpoint_path is not None:
            self.save_checkpoint(self.checkpoint_path)
        return True

    # ----------------------------------------------------------------- parameter changes

    def _apply_changes(self) -> None:
        for changes in self.control.take_changes():
            try:
                new = validate_changes(self.config, changes, self.epoch)
            except ConfigError as e:
                self.observer_errors.append(f"parameter change refused: {e}")
                warnings.warn(f"parameter change refused: {e}", RuntimeWarning, stacklevel=2)
                continue
            self.config = new
            self.pruning.config = new.pruning
            self.pruning.total_epochs = new.training.epochs
            self._emit(EventKind.PARAMETERS_CHANGED,
                       frozen({"changes": {s: dict(v) for s, v in changes.items()},
                               "config": new.to_dict()}))

    # ----------------------------------------------------------------- checkpoints

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically (plain tensors and builtins only)."""
        state = {
            "format": 1,
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "layer_names": list(self.layer_names),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "pruning": self.pruning.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_train_loader": self.train_loader.generator.get_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_checkpoint(self, path: str | Path) -> None:
        atomic_torch_save(self.checkpoint_state(), Path(path))

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by `checkpoint_state`."""
        if list(state["layer_names"]) != list(self.layer_names):
            raise ConfigError("checkpoint: its prunable layers do not match model "
                              f"{self.config.model.name!r}; it was written for another model")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.pruning.load_state_dict(state["pruning"])
        torch.set_rng_state(state["rng_cpu"])
        self.train_loader.generator.set_state(state["rng_train_loader"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.epoch = int(state["epoch"])
        self._resumed = True


def validate_changes(config: RunConfig, changes: Mapping[str, Mapping[str, Any]],
                     epochs_completed: int) -> RunConfig:
    """The config with `changes` applied, or a one-line ConfigError."""
    for section, fields_ in changes.items():
        allowed = CHANGEABLE.get(section, set())
        for key in fields_:
            if key not in allowed:
                raise ConfigError(f"{section}.{key}: cannot change during a run; changeable: "
                                  + ", ".join(f"{s}.{k}" for s in CHANGEABLE for k in sorted(CHANGEABLE[s])))
    new = config.with_changes(**changes)
    if new.training.epochs <= epochs_completed:
        raise ConfigError(f"training.epochs: {new.training.epochs} is not allowed; "
                          f"{epochs_completed} epochs are already done, expected more")
    if new.training.epochs != config.training.epochs:
        # A new T moves every milestone and stretches the schedule. What has happened stays
        # (docs/schedules.md): learning-rate decays already applied to a trained epoch are not
        # undone, and the prune ratio the schedule has reached (under the new pruning settings,
        # the old T) is a floor. Both are recorded in the config the change event carries.
        decays = lr_decays(config, epochs_completed - 1) if epochs_completed else 0
        p = new.pruning
        reached = prune_ratio_at(p.schedule, epochs_completed, config.training.epochs,
                                 p.prune_ratio, p.d, p.ratio_reached)
        new = new.with_changes(training={"lr_decays_reached": decays},
                               pruning={"ratio_reached": reached})
    p = new.pruning
    try:  # refuse here what the schedule cannot compute, rather than fail the running run
        prune_ratio_at(p.schedule, epochs_completed, new.training.epochs, p.prune_ratio, p.d)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    return new


def _diagnostics(norms: tuple[np.ndarray, ...], prev: tuple[np.ndarray, ...]) -> dict[str, tuple]:
    """Per-layer mechanism diagnostics (host side, from the epoch's one copy).

    `norms`: l2 filter norms just before this epoch's re-mask; `prev`: the previous masks.
    dead: filters the previous mask pruned that are still exactly zero (they got no gradient
    at all); pruned/kept_norm_median: median norm of the previously pruned / kept filters (a
    pruned median far above the kept one is the BN kick).
    """
    dead, pruned_med, kept_med = [], [], []
    for n, keep in zip(norms, prev):
        dead.append(int(((~keep) & (n == 0)).sum()))
        pruned_med.append(float(np.median(n[~keep])) if (~keep).any() else None)
        kept_med.append(float(np.median(n[keep])) if keep.any() else None)
    return {"dead": tuple(dead), "pruned_norm_median": tuple(pruned_med),
            "kept_norm_median": tuple(kept_med)}


class _Stopwatch:
    """Wall time of device work: CUDA events on a GPU, read only after the epoch's sync."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> "_Stopwatch":
        if self.cuda:
            self.end.record()
        else:
            self.t1 = time.perf_counter()
        return self

    def seconds(self) -> float:
        """Call after the host has synchronised with the device."""
        return self.start.elapsed_time(self.end) / 1000.0 if self.cuda else self.t1 - self.t0
