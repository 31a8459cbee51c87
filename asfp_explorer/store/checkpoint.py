"""Loading a run's checkpoint: verified against its sha256, loaded without unpickling
arbitrary objects (weights_only=True), and checked for structure before anything uses it."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

from .checksums import read_verified
from .errors import RunDirError

CHECKPOINT = "checkpoint.pt"


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run's checkpoint as a dict of plain tensors and builtins; one-line RunDirError when
    it is missing, empty, changed since it was written, or not a checkpoint of this tool."""
    import torch

    f = Path(run_dir) / CHECKPOINT
    if not f.exists():
        raise RunDirError(f"run_dir: {str(run_dir)!r} has no {CHECKPOINT} (nothing to resume)")
    if f.stat().st_size == 0:
        raise RunDirError(f"{f}: is empty (0 bytes); it was truncated")
    data = read_verified(f)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise RunDirError(f"{f}: cannot be loaded safely ({type(e).__name__}: {first}); it is "
                          "truncated or was tampered with") from None
    check_structure(state, f)
    return state


def check_structure(state: Any, where: Path | str = CHECKPOINT) -> None:
    """The keys and kinds `Trainer.checkpoint_state` writes, or a one-line RunDirError."""
    import torch

    def fail(what: str) -> None:
        raise RunDirError(f"{where}: {what}; not a checkpoint of this tool")

    if not isinstance(state, Mapping):
        fail(f"holds a {type(state).__name__}, expected a mapping")
    need = {"epoch": int, "config": Mapping, "layer_names": list, "model": Mapping,
            "optimizer": Mapping, "pruning": Mapping, "rng_cpu": torch.Tensor,
            "rng_train_loader": torch.Tensor}
    for key, kind in need.items():
        if key not in state:
            fail(f"lacks {key!r}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            fail(f"{key!r} is a {type(state[key]).__name__}")
    if state["epoch"] < 0:
        fail(f"epoch {state['epoch']} is negative")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        fail("'model' holds something other than tensors")
    masks = state["pruning"].get("masks")
    if not isinstance(masks, Mapping) or not all(isinstance(m, torch.Tensor) for m in masks.values()):
        fail("'pruning' lacks its masks")
    if list(masks) != list(state["layer_names"]):
        fail("its masks do not name its layers")


def check_against_model(state: Mapping[str, Any], model, layer_sizes, total_epochs: int,
                        where: Path | str = CHECKPOINT) -> None:
    """Shapes of the state dict and masks match `model`, and the epoch fits the config."""
    own = model.state_dict()
    theirs = state["model"]
    if set(own) != set(theirs):
        extra = sorted(set(theirs) - set(own))[:1] or sorted(set(own) - set(theirs))[:1]
        raise RunDirError(f"{where}: its model tensors do not match the model (e.g. "
                          f"{extra[0]!r}); it was written for another model")
    for k, v in own.items():
        if tuple(theirs[k].shape) != tuple(v.shape):
            raise RunDirError(f"{where}: {k!r} has shape {tuple(theirs[k].shape)}, the model "
                              f"expects {tuple(v.shape)}")
    for (name, mask), size in zip(state["pruning"]["masks"].items(), layer_sizes):
        if tuple(mask.shape) != (size,):
            raise RunDirError(f"{where}: the mask of {name!r} has shape {tuple(mask.shape)}, "
                              f"expected ({size},)")
    if state["epoch"] > total_epochs:
        raise RunDirError(f"{where}: epoch {state['epoch']} is beyond the run's "
                          f"{total_epochs} epochs")


def load_model(run_dir: str | os.PathLike):
    """The run's model as it stands at its checkpoint (masked), with its masks and input size.

    Returns `(model in eval mode, {layer: bool mask}, (C, H, W))`; built-in models only.
    """
    from ..config import ConfigError, RunConfig
    from ..models import build_model
    from .record import load_run

    run = load_run(run_dir)
    state = load_checkpoint(run_dir)
    try:
        config = RunConfig.from_dict(state["config"])
    except ConfigError as e:
        raise RunDirError(f"{Path(run_dir) / CHECKPOINT}: its config is not valid ({e})") from None
    info = run.info
    model = build_model(config.model.name, info["num_classes"], info["input_size"][0])
    check_against_model(state, model, info["layer_sizes"], config.training.epochs,
                        Path(run_dir) / CHECKPOINT)
    model.load_state_dict(state["model"])
    masks = {n: m.bool() for n, m in state["pruning"]["masks"].items()}
    return model.eval(), masks, tuple(info["input_size"])
