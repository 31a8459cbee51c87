"""Data sets and the device-resident loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asfp_explorer.config import DataConfig
from asfp_explorer.data import DataError, Dataset, DeviceLoader, load_dataset, load_npz
from support import CIFAR_SUBSET, tiny_config


def test_digits_split_is_fixed_and_stratified():
    a, b = load_dataset(DataConfig()), load_dataset(DataConfig())
    assert torch.equal(a.y_test, b.y_test)
    assert a.input_size == (1, 8, 8) and a.num_classes == 10
    assert len(a.y_train) + len(a.y_test) == 1797
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 30


def test_augmentation_is_a_shifted_crop_or_its_mirror():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.uint8).view(2, 3, 6, 6)
    data = Dataset("t", x, torch.zeros(2, dtype=torch.long), x, torch.zeros(2, dtype=torch.long),
                   (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 2, scale=1.0)
    loader = DeviceLoader(data, "train", 2, shuffle=False, augment=True, pad=2)
    for _ in range(20):
        out, _ = next(iter(loader))
        for i in range(2):
            padded = torch.nn.functional.pad(x[i].float(), (2, 2, 2, 2))
            candidates = [padded[:, r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
            candidates += [t.flip(2) for t in candidates]
            assert any(torch.equal(out[i], t) for t in candidates)


def test_npz_validation(tmp_path):
    good = dict(x_train=np.zeros((4, 5, 5, 3), np.uint8), y_train=np.array([0, 1, 0, 1]),
                x_test=np.zeros((2, 5, 5, 3), np.uint8), y_test=np.array([0, 1]))
    f = tmp_path / "a.npz"
    np.savez(f, **good)
    d = load_npz(f)
    assert d.input_size == (3, 5, 5) and d.num_classes == 2
    cases = {
        "lacks y_test": {k: v for k, v in good.items() if k != "y_test"},
        "x_train: dtype float32": {**good, "x_train": good["x_train"].astype(np.float32)},
        "y_train: dtype int64, shape \\(3,\\)": {**good, "y_train": np.array([0, 1, 0])},
        "negative": {**good, "y_test": np.array([0, -1])},
        "class 0 has no training images": {**good, "y_train": np.array([1, 2, 1, 2]),
                                            "y_test": np.array([1, 2])},  # 1-based labels
        "class 2 has no training images \\(1 such\\)": {**good, "y_train": np.array([0, 1, 0, 3]),
                                                      "y_test": np.array([0, 3])},
        # More classes than training images cannot all have one: refused before any work.
        "label 99 is not allowed": {**good, "y_test": np.array([0, 99])},
    }
    for msg, arrays in cases.items():
        np.savez(f, **arrays)
        with pytest.raises(DataError, match=msg):
            load_npz(f)
    with pytest.raises(DataError, match="not a file"):
        load_npz(tmp_path / "missing.npz")


def test_cifar10_offline_error_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_dataset(DataConfig(name="cifar10", path=str(tmp_path), download=False))


@pytest.mark.skipif(not CIFAR_SUBSET.exists(), reason="shared CIFAR-10 subset not present")
def test_short_run_on_the_cifar10_subset(tmp_path):
    from asfp_explorer.engine import RunHandle
    from asfp_explorer.store import load_run

    d = load_npz(CIFAR_SUBSET)
    assert d.input_size == (3, 32, 32) and len(d.y_train) == 10000
    # 1,000 training images keep this a CPU-friendly smoke test
    small = Dataset("npz", d.x_train[:1000], d.y_train[:1000], d.x_test[:500], d.y_test[:500],
                    d.mean, d.std, 10)
    cfg = tiny_config(data={"name": "npz", "path": str(CIFAR_SUBSET)}, training={"epochs": 2})
    RunHandle(cfg, tmp_path / "c", dataset=small).run()
    run = load_run(tmp_path / "c")
    assert run.status == "finished" and run.info["input_size"] == [3, 32, 32]
    assert run.metrics[-1]["train_loss"] < run.metrics[1]["train_loss"] * 1.5
