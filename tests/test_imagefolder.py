"""ImageNet-style folders: tiny generated images (PIL, in the test's tmp dir), the papers'
augmentation, DataLoader workers, torchvision ResNets from scratch or from given weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asfp_explorer.config import ConfigError, RunConfig
from asfp_explorer.data import DataError, load_dataset, make_loader

CLASSES = ("ant", "bee", "cat")


def _folder(root, n_train=4, n_val=2, size=(20, 26)):
    """root/train/<class>/*.png and root/val/<class>/*.png, each class its own colour."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                base = np.zeros((*size, 3), np.uint8)
                base[..., c] = 200
                img = np.clip(base + rng.integers(0, 50, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


def _config(root, **data) -> RunConfig:
    return RunConfig().with_changes(
        data={"name": "imagefolder", "path": str(root), "batch_size": 4, "image_size": 16,
              "workers": 0, **data},
        model={"name": "resnet18"}, training={"epochs": 1, "device": "cpu"})


def test_val_batches_are_resize_then_centre_crop_as_torchvision_does(tmp_path):
    from PIL import Image
    from torchvision.transforms import functional as TF

    root = _folder(tmp_path)
    data = load_dataset(_config(root).data)
    assert data.num_classes == 3 and data.input_size == (3, 16, 16)
    x, y = next(iter(make_loader(data, "test", 6, False, False)))
    files = sorted((root / "val").rglob("*.png"))[:6]  # ImageFolder's order: class, then name
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    want = torch.stack([(TF.to_tensor(TF.center_crop(TF.resize(Image.open(f).convert("RGB"),
                                                               18), 16)) - mean) / std
                        for f in files])
    torch.testing.assert_close(x, want)
    assert y.tolist() == [CLASSES.index(f.parent.name) for f in files]


def test_training_batches_follow_the_seeded_generator_with_worker_processes(tmp_path):
    data = load_dataset(_config(_folder(tmp_path), workers=2).data)
    a = make_loader(data, "train", 5, True, True, seed=3)
    b = make_loader(data, "train", 5, True, True, seed=3)
    ea, eb = list(a), list(b)
    assert [x.shape for x, _ in ea] == [(5, 3, 16, 16), (5, 3, 16, 16), (2, 3, 16, 16)]
    for (xa, ya), (xb, yb) in zip(ea, eb):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(torch.cat([y for _, y in ea]).tolist()) == sorted(data.y_train.tolist())
    # The next epoch draws another order from the same generator.
    assert not all(torch.equal(y1, y2) for (_, y1), (_, y2) in zip(ea, list(a)))


def test_shards_split_each_epoch_between_ranks(tmp_path):
    data = load_dataset(_config(_folder(tmp_path, n_train=5)).data)
    labels = []
    for rank in (0, 1):
        loader = make_loader(data, "train", 100, True, False, seed=1).shard(rank, 2)
        labels.append(torch.cat([y for _, y in loader]))
    assert len(labels[0]) == 8 and len(labels[1]) == 7
    assert sorted(torch.cat(labels).tolist()) == sorted(data.y_train.tolist())


def test_a_resnet18_run_trains_on_a_folder(tmp_path):
    from asfp_explorer.engine import RunHandle
    from asfp_explorer.store import load_run

    config = _config(_folder(tmp_path / "images"), workers=2, image_size=32).with_changes(
        pruning={"prune_ratio": 0.3})
    assert RunHandle(config, tmp_path / "run").run() == "finished"
    run = load_run(tmp_path / "run")
    assert [m["epoch"] for m in run.metrics] == [0, 1]
    assert run.info["input_size"] == [3, 32, 32] and run.info["num_classes"] == 3
    assert 0 <= run.metrics[1]["test_acc_masked"] <= 1
    assert run.metrics[1]["prune_ratio"] == pytest.approx(0.3)


def test_pretrained_weights_load_except_a_classifier_of_another_width(tmp_path):
    from asfp_explorer.models import build_model
    from asfp_explorer.models.weights import load_weights

    source = build_model("resnet18", 1000)
    torch.save(source.state_dict(), tmp_path / "r18.pt")
    model = build_model("resnet18", 3)
    fresh_fc = model.fc.weight.detach().clone()
    with pytest.warns(RuntimeWarning, match="classifier"):
        load_weights(model, tmp_path / "r18.pt")
    torch.testing.assert_close(model.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(model.fc.weight, fresh_fc)
    with pytest.raises(ConfigError, match="model.weights: .* another architecture"):
        load_weights(build_model("resnet34", 3), tmp_path / "r18.pt")
    with pytest.raises(ConfigError, match="model.weights"):
        load_weights(model, tmp_path / "missing.pt")


@pytest.mark.parametrize("make, message", [
    (lambda r: (r / "train" / "a").mkdir(parents=True), "no val/ folder"),
    (lambda r: None, "no train/ folder"),
])
def test_bad_folders_are_one_line_data_errors(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(_config(tmp_path).data)


def test_imagefolder_needs_a_path():
    with pytest.raises(ConfigError, match="data.path"):
        RunConfig().with_changes(data={"name": "imagefolder"})
