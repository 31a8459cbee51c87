"""Ready-made starting configurations: the tutorial's (picks the data set and device for this
machine) and the papers' (`PAPER_PRESETS`: rows of the published tables, spec §8-§9).

    base = tutorial_preset()           # prints what it chose and why
    base = tutorial_preset(dataset="cifar10", device="cuda", epochs=60)

Nothing here probes the network: CIFAR-10 is chosen where a GPU makes it worth its 170 MB
(downloaded into `data/` on first use where it is not there yet), digits otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, RunConfig

CIFAR_FILES = ("cifar-10-batches-py", "cifar-10-python.tar.gz")


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working folder) that holds a
    pyproject.toml; the working folder where none does."""
    start = (start or Path.cwd()).resolve()
    return next((p for p in (start, *start.parents) if (p / "pyproject.toml").exists()), start)


def tutorial_preset(dataset: str | None = None, device: str | None = None,
                    epochs: int | None = None, *, data_dir: str | Path | None = None,
                    verbose: bool = True) -> RunConfig:
    """The tutorial's base configuration: ResNet-20, target P = 0.4, data set and device
    chosen for this machine unless given. Prints one line saying what and why.

    `dataset`: "digits" (offline, 8x8 images, seconds per epoch on a CPU) or "cifar10".
    `device`: "cuda" or "cpu". `epochs`: default 30 on CIFAR-10, 20 on digits.
    `data_dir`: where CIFAR-10 is (or goes); default `data/` of the project.
    """
    import torch

    data = Path(data_dir) if data_dir is not None else project_root() / "data"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        why_device = "a CUDA GPU is available" if device == "cuda" else "no CUDA GPU found"
    else:
        why_device = "as asked"
    found = any((data / n).exists() for n in CIFAR_FILES)
    if dataset is None:
        dataset = "cifar10" if device == "cuda" else "digits"
        why_data = ("worth it on a GPU" + ("; found in data/" if found else
                                            "; downloading 170 MB into data/ on first use")
                    if dataset == "cifar10" else "offline and fast on a CPU")
    elif dataset in ("digits", "cifar10"):
        why_data = "as asked"
    else:
        raise ConfigError(f"dataset: {dataset!r} is not allowed; allowed: digits, cifar10")
    if epochs is None:
        epochs = 30 if dataset == "cifar10" else 20
    # Digits has only 1,442 training images: small batches give far better pruned accuracy.
    batch = 128 if dataset == "cifar10" else 32
    config = RunConfig().with_changes(
        data={"name": dataset, "path": str(data) if dataset == "cifar10" else None,
              "batch_size": batch},
        model={"name": "resnet20"},
        pruning={"prune_ratio": 0.4},
        training={"epochs": int(epochs), "device": device},
    )
    if verbose:
        print(f"Using {dataset} ({why_data}) on {device} ({why_device}): ResNet-20, "
              f"{epochs} epochs, batch {batch}. Choose otherwise with "
              "tutorial_preset(dataset=..., device=..., epochs=...).")
    return config


# ---------------------------------------------------------------------- the papers' presets
# Rows of the published tables (spec §9) with the recipes of spec §8. ASFP's own CIFAR table
# is not available: its presets are the SFP rows' settings with the asymptotic schedule, to be
# compared against the SFP row (the paper's claim: asymptotic beats constant, soft beats hard).

CIFAR10_RECIPE = {"training": {"epochs": 200, "lr": 0.1, "lr_gamma": 0.2,
                               "lr_milestones": (0.3, 0.6, 0.8), "weight_decay": 5e-4,
                               "momentum": 0.9, "nesterov": True},
                  "data": {"name": "cifar10", "batch_size": 128}}
# 0.1 x 0.1 every 30 of 100 epochs; RandomResizedCrop 224 + flip, val resize 256 / crop 224.
IMAGENET_RECIPE = {"training": {"epochs": 100, "lr": 0.1, "lr_gamma": 0.1,
                                "lr_milestones": (0.3, 0.6, 0.9), "weight_decay": 1e-4,
                                "momentum": 0.9, "nesterov": True},
                   "data": {"name": "imagefolder", "batch_size": 256, "image_size": 224}}
PRETRAINED_LR = 0.01  # "pretrained" variant: same epochs, learning rate / 10 (spec §8)


@dataclass(frozen=True)
class PaperPreset:
    """One row of the papers' tables as a run configuration.

    `published`: the numbers the row reports (top-1 %, or top-1 / top-5 % on ImageNet, and
    the FLOPs reduction); `pretrained`: starts from given weights (`model.weights`)."""

    name: str
    model: str
    method: str
    prune_ratio: float
    criterion: str
    dataset: str
    pretrained: bool
    reproduces: str
    published: str

    def config(self, data_path: str | None = None, weights: str | None = None) -> RunConfig:
        """The preset's RunConfig; `data_path` is the CIFAR-10 root or the ImageNet folder."""
        recipe = CIFAR10_RECIPE if self.dataset == "cifar10" else IMAGENET_RECIPE
        training = dict(recipe["training"])
        if self.pretrained:
            training["lr"] = PRETRAINED_LR
        data = dict(recipe["data"])
        if data_path is not None:
            data["path"] = str(data_path)
        elif self.dataset == "imagefolder":
            data["path"] = "data/imagenet"  # placeholder: --data-path gives the real folder
        return RunConfig().with_changes(
            data=data, model={"name": self.model, "weights": weights},
            pruning={"method": self.method, "prune_ratio": self.prune_ratio,
                     "criterion": self.criterion},
            training=training)


def _cifar(model: str, method: str, p: float, criterion: str, row: str, published: str):
    tag = "fpgm" if criterion == "fpgm" else method
    return PaperPreset(f"cifar10-{model}-{tag}-{p:g}", model, method, p, criterion, "cifar10",
                       False, row, published)


def _imagenet(model: str, method: str, p: float, criterion: str, pretrained: bool, row: str,
              published: str):
    tag = "fpgm" if criterion == "fpgm" else method
    name = f"imagenet-{model}-{tag}-{p:g}" + ("-pretrained" if pretrained else "")
    return PaperPreset(name, model, method, p, criterion, "imagefolder", pretrained, row,
                       published)


_CIFAR_ROWS = [  # model, P, SFP row's published numbers (baseline -> pruned top-1 %, FLOPs)
    ("resnet20", 0.3, "92.20 ± 0.18 -> 90.83 ± 0.31 %, FLOPs -42.2 %"),
    ("resnet32", 0.3, "92.63 ± 0.70 -> 92.08 ± 0.08 %, FLOPs -41.5 %"),
    ("resnet56", 0.4, "93.59 ± 0.58 -> 92.26 ± 0.31 %, FLOPs -52.6 %"),
    ("resnet110", 0.3, "93.68 ± 0.32 -> 93.38 ± 0.30 %, FLOPs -40.8 %"),
]
PAPER_PRESETS: dict[str, PaperPreset] = {p.name: p for p in [
    *[_cifar(m, "sfp", p, "l2", f"SFP CIFAR-10 {m}, P={p:g} (from scratch)", pub)
      for m, p, pub in _CIFAR_ROWS],
    _cifar("resnet56", "sfp", 0.4, "fpgm", "FPGM-only CIFAR-10 resnet56, P=0.4",
           "93.59 ± 0.58 -> 92.93 ± 0.49 %, FLOPs -52.6 %"),
    *[_cifar(m, "asfp", p, "l2", f"ASFP on the SFP row CIFAR-10 {m}, P={p:g}; compare with "
             "that row", "SFP row: " + pub) for m, p, pub in _CIFAR_ROWS],
    _imagenet("resnet18", "sfp", 0.3, "l2", False, "SFP ILSVRC-2012 resnet18, scratch",
              "70.28 / 89.63 -> 67.10 / 87.78 % top-1 / top-5, FLOPs -41.8 %"),
    _imagenet("resnet34", "sfp", 0.3, "l2", False, "SFP ILSVRC-2012 resnet34, scratch",
              "73.92 / 91.62 -> 71.83 / 90.33 % top-1 / top-5, FLOPs -41.1 %"),
    _imagenet("resnet50", "sfp", 0.3, "l2", False, "SFP ILSVRC-2012 resnet50, scratch",
              "76.15 / 92.87 -> 74.61 / 92.06 % top-1 / top-5, FLOPs -41.8 %"),
    _imagenet("resnet50", "sfp", 0.3, "l2", True, "SFP ILSVRC-2012 resnet50, pretrained",
              "76.15 / 92.87 -> 62.14 / 84.60 % top-1 / top-5, FLOPs -41.8 %"),
    _imagenet("resnet50", "sfp", 0.3, "fpgm", True, "FPGM-only 30 % ILSVRC-2012 resnet50, "
              "pretrained", "76.15 / 92.87 -> 75.59 / 92.63 % top-1 / top-5, FLOPs -42.2 %"),
    _imagenet("resnet50", "asfp", 0.3, "l2", True, "ASFP's headline: ILSVRC-2012 resnet50, "
              "pretrained", "> 40 % FLOPs removed, 0.14 % top-5 loss (about 8 points above "
              "the SFP pretrained row)"),
]}


def paper_preset(name: str) -> PaperPreset:
    """The preset `name` (see `PAPER_PRESETS`), or a one-line ConfigError listing them."""
    if name not in PAPER_PRESETS:
        raise ConfigError(f"preset: {name!r} is not a preset; allowed: "
                          + ", ".join(PAPER_PRESETS))
    return PAPER_PRESETS[name]
