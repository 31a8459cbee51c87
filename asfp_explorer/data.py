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
    """Load the configured data set onto the CPU (only `train_subset` images when set)."""
    if config.name == "digits":
        data = _digits()
    elif config.name == "npz":
        data = load_npz(config.path)
    elif config.name == "cifar10":
        data = _cifar10(config.path or DEFAULT_ROOT, config.download)
    elif config.name == "imagefolder":  # stays on disk, streamed by DataLoader workers
        from .imagefolder import load_imagefolder

        if config.train_subset:
            raise DataError("data.train_subset: not supported for imagefolder; make a smaller "
                            "folder instead")
        return load_imagefolder(config)
    else:
        raise DataError(f"data.name: unknown {config.name!r}; allowed: digits, cifar10, npz, "
                        "imagefolder")
    return balanced_train_subset(data, config.train_subset) if config.train_subset else data


def balanced_train_subset(data: Dataset, n: int) -> Dataset:
    """The first `n` training images, class-balanced: the first image of every class, then the
    second of every class, and so on (in file order), so class counts differ by at most one.
    The test split and the normalisation statistics stay those of the full data set."""
    y = data.y_train.numpy()
    if n > len(y):
        raise DataError(f"data.train_subset: {n} is not allowed; the training split has "
                        f"{len(y)} images")
    rank = np.zeros(len(y), dtype=np.int64)  # position of each image within its class
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx))
    keep = np.sort(np.lexsort((y, rank))[:n])  # round-robin over classes, then file order
    idx = torch.from_numpy(keep)
    return Dataset(data.name, data.x_train[idx], data.y_train[idx], data.x_test, data.y_test,
                   data.mean, data.std, data.num_classes, data.scale)


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
    """An .npz archive with uint8 images x_* (N,H,W,C, N,H,W or N,C,H,W with 1..4 channels,
    at least 4x4 pixels) and integer labels y_* (0..classes-1, every class in y_train)."""
    if not path or not Path(path).is_file():
        raise DataError(f"data.path: {str(path)!r} is not a file; expected an .npz archive")
    unreadable = f"data.path: {str(path)!r} is not a readable .npz archive"
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # 0 bytes (EOFError), a truncated zip, pickled data, not numpy
        raise DataError(f"{unreadable} ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"data.path: {str(path)!r} holds a single array (.npy); expected an "
                        ".npz archive with x_train, y_train, x_test, y_test")
    try:
        with z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise DataError(f"data.path: {str(path)!r} lacks {', '.join(missing)}; "
                                "expected x_train, y_train, x_test, y_test")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except DataError:
        raise
    except Exception as e:  # a member cut off or damaged inside the zip
        raise DataError(f"{unreadable} ({type(e).__name__}: {str(e)[:80]})") from None
    xs = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise DataError(f"data.x_{split}: dtype {x.dtype}, shape {x.shape}; "
                            "expected uint8 images (N,H,W,C) or (N,H,W)")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"data.y_{split}: dtype {y.dtype}, shape {y.shape}; "
                            f"expected {x.shape[0]} integer labels")
        xs[split] = _images_nchw(x, f"data.x_{split}").copy()
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise DataError(f"data.x_test: image shape {xs['test'].shape[1:]} differs from "
                        f"x_train's {xs['train'].shape[1:]}")
    y_all = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.int64)
    if len(y_all) and y_all.min() < 0:
        raise DataError(f"data.y_train: label {y_all.min()} is negative; expected 0..classes-1")
    # Every class needs a training image (checked below), so a label beyond the number of
    # training images is a mistake; refusing it first bounds the work of that check.
    if len(y_all) and y_all.max() >= len(arrays["y_train"]):
        raise DataError(f"data.y_train: label {int(y_all.max())} is not allowed; with "
                        f"{len(arrays['y_train'])} training images the labels must be 0.."
                        f"{len(arrays['y_train']) - 1} at most (0..classes-1)")
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


MAX_CHANNELS = 4  # grey, grey+alpha, RGB, RGBA: a longer channel axis is an image side
MIN_SIDE = 4  # pixels; below, the networks' downsampling leaves no spatial extent


def _images_nchw(x: np.ndarray, name: str) -> np.ndarray:
    """(N,H,W), (N,H,W,C) or (N,C,H,W) images as N,C,H,W, the layout told by the channel axis
    (1..4 channels); a shape that fits both layouts equally is refused rather than guessed."""
    if x.ndim == 3:
        x = x[:, None]
    else:
        last, first = 1 <= x.shape[3] <= MAX_CHANNELS, 1 <= x.shape[1] <= MAX_CHANNELS
        if last and first:  # e.g. (N,3,32,3): square images decide
            last, first = x.shape[1] == x.shape[2], x.shape[2] == x.shape[3]
            if last == first:
                raise DataError(f"{name}: shape {x.shape} could be N,H,W,C or N,C,H,W; save "
                                "the images as N,H,W,C with H, W > 4")
        if not (last or first):
            raise DataError(f"{name}: shape {x.shape} has no channel axis of 1 to "
                            f"{MAX_CHANNELS}; expected images N,H,W,C or N,C,H,W")
        if last:
            x = x.transpose(0, 3, 1, 2)
    if min(x.shape[2:]) < MIN_SIDE:
        raise DataError(f"{name}: images of {x.shape[2]}x{x.shape[3]} pixels are not allowed; "
                        f"expected at least {MIN_SIDE}x{MIN_SIDE}")
    return x


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
        self.rank, self.world = 0, 1

    def shard(self, rank: int, world: int) -> "DeviceLoader":
        """Distributed: each global batch is drawn and augmented as in one process; this rank
        keeps its slice rank::world of it (engine/distributed.py)."""
        self.rank, self.world = rank, world
        return self

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
            y = self.y[idx]
            if self.world > 1:
                x, y = x[self.rank::self.world], y[self.rank::self.world]
            yield (x.float() - self.mean) / self.std, y

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


def make_loader(data, split: str, batch_size: int, shuffle: bool, augment: bool,
                seed: int = 0):
    """The loader for one split: a DeviceLoader for device-resident data, the data set's own
    (`data.loader(...)`, e.g. imagefolder's DataLoader with workers) for data on disk."""
    own = getattr(data, "loader", None)
    if own is not None:
        return own(split, batch_size, shuffle, augment, seed)
    return DeviceLoader(data, split, batch_size, shuffle, augment, seed=seed)
