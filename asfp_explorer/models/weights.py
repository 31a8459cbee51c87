"""Starting weights for the papers' "pretrained" variant (spec §8: same epochs, lr / 10).

The file is a `state_dict` saved with `torch.save` (torchvision's downloaded ResNet weights are
one); it is loaded with `weights_only=True`, so it cannot run code. A classifier of another
width (1000 ImageNet classes, a folder with fewer) keeps its fresh initialisation.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import ConfigError

CLASSIFIER_PREFIXES = ("fc.", "linear.", "classifier.")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Copy the tensors of the state_dict file `path` into `model`; a one-line ConfigError
    when the file is not a state_dict of this architecture."""
    f = Path(path)
    if not f.is_file():
        raise ConfigError(f"model.weights: {str(path)!r} is not a file; expected a state_dict "
                          "saved with torch.save(model.state_dict(), FILE)")
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"model.weights: {str(path)!r} cannot be loaded safely "
                          f"({type(e).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint of this tool
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.weights: {str(path)!r} holds no state_dict of tensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        name = (missing or extra)[0]
        raise ConfigError(f"model.weights: {str(path)!r} does not fit the model ("
                          f"{'lacks' if missing else 'has an unknown'} {name!r}); it was saved "
                          "for another architecture")
    skipped = []
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            if not k.startswith(CLASSIFIER_PREFIXES):
                raise ConfigError(f"model.weights: {k!r} has shape {tuple(state[k].shape)}, "
                                  f"the model expects {tuple(v.shape)}")
            skipped.append(k)
    load = {k: v for k, v in state.items() if k not in skipped}
    model.load_state_dict({**own, **load})
    if skipped:
        warnings.warn(f"model.weights: the classifier ({', '.join(skipped)}) has another "
                      "number of classes; it starts freshly initialised", RuntimeWarning,
                      stacklevel=2)
