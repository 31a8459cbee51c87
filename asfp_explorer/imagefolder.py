"""ImageNet-style data: `ROOT/train/<class>/*.jpg` and `ROOT/val/<class>/*.jpg`, decoded from
disk by a torch DataLoader with worker processes while training (ImageNet does not fit on a
device, unlike the data sets of data.py).

Augmentation of the papers (spec §8): training images get RandomResizedCrop(S) and a random
horizontal flip; validation images are resized to S x 256/224 (shorter side) and centre
cropped to S. S is `data.image_size` (224 by default; tests use a few pixels).

`ImageFolderData` stands in for `data.Dataset` in the trainer (name, num_classes, input_size,
labels y_train / y_test) and makes the loaders (`loader`); `data.make_loader` picks it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import DataConfig
from .data import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet statistics
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 256 / 224  # val: resize to 256 then centre crop 224 (spec §8)


def train_transform(size: int):
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def val_transform(size: int):
    from torchvision import transforms as T

    return T.Compose([T.Resize(round(size * RESIZE_RATIO)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageFolderData:
    """`ROOT/train` and `ROOT/val` as torchvision ImageFolders; images stay on disk."""

    def __init__(self, root: str | os.PathLike, image_size: int = 224, workers: int = 4):
        from torchvision.datasets import ImageFolder

        self.root = Path(root)
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise DataError(f"data.path: {str(self.root)!r} has no {split}/ folder; expected "
                                "train/ and val/, each with one folder of images per class")
        try:
            self.train_set = ImageFolder(str(self.root / "train"))
            self.val_set = ImageFolder(str(self.root / "val"))
        except (FileNotFoundError, RuntimeError) as e:  # a class folder without images
            raise DataError(f"data.path: {str(self.root)!r}: {str(e).splitlines()[0]}") from None
        if self.train_set.classes != self.val_set.classes:
            raise DataError(f"data.path: train/ has {len(self.train_set.classes)} class folders, "
                            f"val/ has {len(self.val_set.classes)} (or other names); expected "
                            "the same class folders in both")
        if len(self.train_set.classes) < 2:
            raise DataError("data.path: needs at least 2 class folders in train/ and val/")
        self.name = "imagefolder"
        self.classes = list(self.train_set.classes)
        self.num_classes = len(self.classes)
        self.image_size = image_size
        self.workers = workers
        self.device = torch.device("cpu")
        self.y_train = torch.tensor(self.train_set.targets, dtype=torch.int64)
        self.y_test = torch.tensor(self.val_set.targets, dtype=torch.int64)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def to(self, device: torch.device | str) -> "ImageFolderData":
        """The images stay on disk; batches are moved to `device` as they are loaded."""
        self.device = torch.device(device)
        return self

    def loader(self, split: str, batch_size: int, shuffle: bool, augment: bool,
               seed: int = 0) -> "StreamLoader":
        """Batches of one split on `self.device` (see StreamLoader)."""
        return StreamLoader(self, split, batch_size, shuffle, augment, seed)


class StreamLoader:
    """A DataLoader over one split whose order and augmentation come from `generator`.

    The generator (seeded, saved in checkpoints as DeviceLoader's is) draws each epoch's
    permutation and the workers' base seed, so a run and its resume see the same batches.
    `shard(rank, world)` keeps every world-th sample of each epoch's order (distributed).
    """

    def __init__(self, data: ImageFolderData, split: str, batch_size: int, shuffle: bool,
                 augment: bool, seed: int = 0):
        from torchvision.datasets import ImageFolder

        base = data.train_set if split == "train" else data.val_set
        transform = (train_transform(data.image_size) if augment and split == "train"
                     else val_transform(data.image_size))
        # Same files and labels, own transform (the train split may be evaluated plainly too).
        self.dataset = ImageFolder(base.root, transform=transform)
        self.y = data.y_train if split == "train" else data.y_test
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.workers = data.workers
        self.device = data.device
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)
        self.rank, self.world = 0, 1

    def shard(self, rank: int, world: int) -> "StreamLoader":
        self.rank, self.world = rank, world
        return self

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.y), self.world))
        return (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        from torch.utils.data import DataLoader

        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        worker_seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        indices = order[self.rank::self.world].tolist()
        g = torch.Generator()
        g.manual_seed(worker_seed)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=indices,
                            num_workers=self.workers, generator=g,
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        cuda = self.device.type == "cuda"
        for x, y in loader:
            yield x.to(self.device, non_blocking=cuda), y.to(self.device, non_blocking=cuda)


def load_imagefolder(config: DataConfig) -> ImageFolderData:
    if not config.path or not Path(config.path).is_dir():
        raise DataError(f"data.path: {str(config.path)!r} is not a folder; expected one with "
                        "train/ and val/ of class folders")
    return ImageFolderData(config.path, config.image_size, config.workers)
