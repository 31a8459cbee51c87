"""Data sets as device-resident uint8 tensors, and a loader that augments on the device.

`digits` (scikit-learn's 8x8 handwritten digits, shipped inside scikit-learn) is the offline
default; `cifar10` uses torchvision's folder layout (downloaded where the machine is online);
`npz` reads an archive with x_train, y_train, x_test, y_test (uint8 images, HWC or HW).
The whole data set lives on the training device; crops and flips happen there per batch
(as in airbench / hlb-CIFAR10), so the loop never waits on host-side data work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # full CIFAR-10 training set
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_ROOT = "data"


class DataError(ValueError):
    """A data set that cannot be loaded; the message is one line and says what to do."""


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 N x C x H x W, labels as int64 N; normalisation per channel (0..1 scale)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    scale: float = 255.0  # pixel value that maps to 1.0

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device), self.mean, self.std,
                       self.num_classes, self.scale)


def load_dataset(config: DataConfig) -> Dataset:
    """Load the configured data set onto the CPU."""
    if config.name == "digits":
        return _digits()
    if config.name == "npz":
        return load_npz(config.path)
    if config.name == "cifar10":
        return _cifar10(config.path or DEFAULT_ROOT, config.download)
    raise DataError(f"data.name: unknown {config.name!r}; allowed: digits, cifar10, npz")


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # 1797 x 1 x 8 x 8, values 0..16
    y = d.target.astype(np.int64)
    # A fixed, class-stratified 80/20 split, the same on every machine.
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, size=len(idx) // 5, replace=False)] = True
    mean, std = _stats(x[~test], 16.0)
    return Dataset("digits", *map(torch.from_numpy, (x[~test], y[~test], x[test], y[test])),
                   mean, std, 10, 16.0)


def load_npz(path: str | os.PathLike | None) -> Dataset:
    """An .npz archive with uint8 images x_* (N,H,W,C or N,H,W) and integer labels y_*."""
    if not path or not Path(path).is_file():
        raise DataError(f"data.path: {str(path)!r} is not a file; expected an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"data.path: {str(path)!r} lacks {', '.join(missing)}; "
                                "expected x_train, y_train, x_test, y_test")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"data.path: {str(path)!r} is not a readable .npz archive ({e})") from None
    xs = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise DataError(f"data.x_{split}: dtype {x.dtype}, shape {x.shape}; "
                            "expected uint8 images (N,H,W,C) or (N,H,W)")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"data.y_{split}: dtype {y.dtype}, shape {y.shape}; "
                            f"expected {x.shape[0]} integer labels")
        xs[split] = (x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)).copy()
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"data.x_test: image shape {xs['test'].shape[1:]} differs from "
                        f"x_train's {xs['train'].shape[1:]}")
    y_all = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.int64)
    if len(y_all) and y_all.min() < 0:
        raise DataError(f"data.y_train: label {y_all.min()} is negative; expected 0..classes-1")
    num_classes = int(y_all.max()) + 1 if len(y_all) else 0
    if num_classes < 2 or len(arrays["y_train"]) == 0 or len(arrays["y_test"]) == 0:
        raise DataError("data.path: needs non-empty train and test splits with >= 2 classes")
    # Classes are 0..max label; one without training images is almost always a labelling
    # mistake (1-based labels, a stray id) that would silently train a wrong classifier.
    absent = np.setdiff1d(np.arange(num_classes), arrays["y_train"].astype(np.int64))
    if len(absent):
        raise DataError(f"data.y_train: labels run 0..{num_classes - 1} but class "
                        f"{int(absent[0])} has no training images ({len(absent)} such); "
                        "expected labels 0..classes-1 without gaps")
    x3 = xs["train"]
    if x3.shape[1] == 3 and x3.shape[2:] == (32, 32):
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:
        mean, std = _stats(x3, 255.0)
    return Dataset("npz", torch.from_numpy(xs["train"]),
                   torch.from_numpy(arrays["y_train"].astype(np.int64)),
                   torch.from_numpy(xs["test"]), torch.from_numpy(arrays["y_test"].astype(np.int64)),
                   mean, std, num_classes)


def _cifar10(root: str, download: bool) -> Dataset:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(root, train=True, download=download)
        test = CIFAR10(root, train=False, download=False)
    except Exception as e:  # no network, a partial download, a wrong folder
        raise DataError(
            f"data.path: CIFAR-10 is not under {root!r} and could not be downloaded "
            f"({type(e).__name__}); put cifar-10-python.tar.gz (from "
            "https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted "
            f"cifar-10-batches-py/ into {root!r}, or use --dataset digits / npz"
        ) from None
    return Dataset(
        "cifar10",
        torch.from_numpy(train.data.transpose(0, 3, 1, 2).copy()),
        torch.tensor(train.targets, dtype=torch.int64),
        torch.from_numpy(test.data.transpose(0, 3, 1, 2).copy()),
        torch.tensor(test.targets, dtype=torch.int64),
        CIFAR10_MEAN, CIFAR10_STD, 10,
    )


def _stats(x: np.ndarray, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.astype(np.float64) / scale
    mean = xf.mean(axis=(0, 2, 3))
    std = np.maximum(xf.std(axis=(0, 2, 3)), 1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class DeviceLoader:
    """Batches of normalised float images from a device-resident split.

    Shuffling uses its own generator (seeded, saved in checkpoints); with `augment`, each
    batch gets a random crop after zero padding of `pad` pixels and a random horizontal flip
    (spec §8), computed on the device.
    """

    def __init__(self, data: Dataset, split: str, batch_size: int, shuffle: bool,
                 augment: bool, seed: int = 0, pad: int = 4):
        self.x = data.x_train if split == "train" else data.x_test
        self.y = data.y_train if split == "train" else data.y_test
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad = pad
        device = self.x.device
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * data.scale
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1) * data.scale
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        n = len(self.y)
        device = self.x.device
        order = (torch.randperm(n, device=device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=device))
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.x[idx]
            if self.augment:
                x = self._crop_flip(x)
            yield (x.float() - self.mean) / self.std, self.y[idx]

    def _crop_flip(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # zero pixels, as torchvision pads
        g = self.generator
        oy = torch.randint(0, 2 * p + 1, (b, 1), device=x.device, generator=g)
        ox = torch.randint(0, 2 * p + 1, (b, 1), device=x.device, generator=g)
        rows = (oy + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * p)
        cropped = padded.gather(2, rows)
        cols = (ox + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
        cropped = cropped.gather(3, cols)
        flip = torch.rand(b, device=x.device, generator=g) < 0.5
        return torch.where(flip.view(b, 1, 1, 1), cropped.flip(3), cropped)
