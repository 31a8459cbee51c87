"""Model registry and the prunable-layer rule (spec §3); your own model in every command."""

from __future__ import annotations

import copy
import json
import textwrap

import pytest
import torch
import torchvision
from torch import nn

from asfp_explorer import model_registry
from asfp_explorer.cli import main
from asfp_explorer.config import MODELS, ConfigError, RunConfig
from asfp_explorer.models import build_model, model_names, prunable_layers, register_model
from asfp_explorer.models.cifar_resnet import CifarResNet
from asfp_explorer.models.torchvision_resnets import TorchvisionResNet
from asfp_explorer.store import load_run

CIFAR_COUNTS = {"resnet20": 19, "resnet32": 31, "resnet56": 55, "resnet110": 109}
# stem + (2 convs x blocks) for basic blocks, stem + (3 convs x blocks) for bottlenecks
TORCHVISION_COUNTS = {"resnet18": 1 + 2 * 8, "resnet34": 1 + 2 * 16, "resnet50": 1 + 3 * 16,
                      "resnet101": 1 + 3 * 33}


def test_every_built_in_model_is_counted_below():
    assert set(MODELS) == set(CIFAR_COUNTS) | set(TORCHVISION_COUNTS)


@pytest.mark.parametrize("name,count", CIFAR_COUNTS.items())
def test_cifar_prunable_counts(name, count):
    model = build_model(name)
    convs = prunable_layers(model)
    assert len(convs) == count
    assert all(isinstance(c, nn.Conv2d) for c in convs.values())
    assert "fc" not in convs


@pytest.mark.parametrize("name,millions", [("resnet20", 0.27), ("resnet56", 0.85)])
def test_cifar_parameter_counts(name, millions):
    params = sum(p.numel() for p in build_model(name).parameters())
    assert round(params / 1e6, 2) == millions


@pytest.mark.parametrize("name,count", TORCHVISION_COUNTS.items())
def test_torchvision_rule(name, count):
    model = build_model(name, num_classes=10)
    names = list(prunable_layers(model))
    assert len(names) == count
    assert names[0] == "conv1"
    assert not any("downsample" in n for n in names)
    assert "fc" not in names
    # every conv except the projection shortcuts, so the block's last conv is included
    all_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(names) == sorted(n for n in all_convs if "downsample" not in n)
    last = "layer1.0.conv3" if name in ("resnet50", "resnet101") else "layer1.0.conv2"
    assert last in names
    # forward order: the order convs are called in
    called = []
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: called.append(n))
             for n, m in model.named_modules() if n in names]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert called == names


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_resnet_is_torchvisions(depth):
    ours = TorchvisionResNet(depth, num_classes=7)
    theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=7)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs.eval()(x))


def test_torchvision_in_channels_for_digits():
    model = build_model("resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_rule_survives_deepcopy_and_state_dict(name):
    model = build_model(name)
    names = list(prunable_layers(model))
    clone = copy.deepcopy(model)
    assert list(prunable_layers(clone)) == names
    fresh = build_model(name)
    fresh.load_state_dict(model.state_dict())
    assert list(prunable_layers(fresh)) == names


def test_unknown_model_and_depth():
    with pytest.raises(ConfigError, match="model.name: 'resnet7' is not allowed"):
        build_model("resnet7")
    with pytest.raises(ValueError, match="depth: 19"):
        TorchvisionResNet(19)
    with pytest.raises(ValueError, match="depth: 21"):
        CifarResNet(21)


class Plain(nn.Module):
    """A user's own CNN without prunable_conv_names()."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = self.c2(x)
        return self.head(x.mean((2, 3)))


def test_prunable_layers_falls_back_to_tracing():
    convs = prunable_layers(Plain(), (3, 16, 16))
    assert list(convs) == ["c1"]  # c2's output goes to .mean() and the classifier
    assert list(prunable_layers(Plain())) == ["c1"]  # default probe size


def test_wrong_hand_made_rule_is_refused():
    model = Plain()
    model.prunable_conv_names = lambda: ["b1"]
    with pytest.raises(TypeError, match="'b1'.*not an nn.Conv2d"):
        prunable_layers(model)


# ----------------------------------------------------------------------------- your own model

TINY_NET = textwrap.dedent("""
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.a = nn.Conv2d(in_channels, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.b = nn.Conv2d(8, 6, 3, padding=1)
            self.fc = nn.Linear(6, num_classes)

        def forward(self, x):
            x = torch.relu(self.b(torch.relu(self.bn(self.a(x)))))
            return self.fc(x.mean((2, 3)))


    def build(num_classes, in_channels):
        return TinyNet(num_classes, in_channels)
""")


@pytest.fixture
def tiny_net(tmp_path, monkeypatch):
    """An importable module `asfp_tiny_net` with a builder `build`; registrations made in the
    test are dropped afterwards."""
    (tmp_path / "asfp_tiny_net.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(model_registry, "_registered", {})
    import importlib

    return importlib.import_module("asfp_tiny_net")


def test_an_unknown_model_gets_one_line_listing_the_registered_ones(tiny_net, tmp_path):
    """Refused where a run starts or a model is built, before any folder is made; a config
    checks the spelling only (a stored run of a model registered elsewhere must load)."""
    from asfp_explorer.engine import RunHandle

    register_model("tinynet", tiny_net.build)
    cfg = RunConfig().with_changes(model={"name": "mynet"})
    for attempt in (lambda: build_model("mynet"), lambda: RunHandle(cfg, tmp_path / "run")):
        with pytest.raises(ConfigError) as e:
            attempt()
        text = str(e.value)
        assert "\n" not in text and text.startswith("model.name: 'mynet' is not allowed")
        assert all(name in text for name in MODELS + ("tinynet",))
        assert "package.module:factory" in text
    assert not (tmp_path / "run").exists()
    for bad in ("asfp_tiny_net:", ":build", "a b:c", "asfp_tiny_net:build:x", "", 3):
        with pytest.raises(ConfigError, match="^model.name: .* is not allowed"):
            RunConfig().with_changes(model={"name": bad})


def test_a_reference_is_only_imported_when_the_model_is_built(tmp_path, monkeypatch):
    """Loading a config never runs code: a reference is checked for its spelling only."""
    marker = tmp_path / "imported"
    (tmp_path / "asfp_marker_net.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom asfp_tiny_net import build\n")
    (tmp_path / "asfp_tiny_net.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = RunConfig.from_dict(RunConfig().with_changes(model={"name": "asfp_marker_net:build"}).to_dict())
    assert cfg.model.name == "asfp_marker_net:build" and not marker.exists()
    assert isinstance(build_model(cfg.model.name, 10, 1), nn.Module) and marker.exists()
    with pytest.raises(ConfigError, match="cannot import 'asfp_no_such_module'"):
        build_model("asfp_no_such_module:build")
    with pytest.raises(ConfigError, match="has no callable 'nothing'"):
        build_model("asfp_tiny_net:nothing")


def test_a_registered_model_trains_and_appears_in_the_menus(tiny_net, tmp_path):
    from asfp_explorer.engine import RunHandle
    from asfp_explorer.viz.dashboard import _available_models

    register_model("tinynet", tiny_net.build)
    assert model_names()[-1] == "tinynet" and _available_models()[-1] == "tinynet"
    cfg = RunConfig().with_changes(model={"name": "tinynet"},
                                   training={"epochs": 1, "device": "cpu"}, data={"batch_size": 64})
    assert RunHandle(cfg, tmp_path / "run").run() == "finished"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["name"] == "tinynet"
    model_registry._registered.clear()  # as in another process: the stored run still shows
    assert load_run(tmp_path / "run").config["model"]["name"] == "tinynet"
    assert main(["show", str(tmp_path / "run")]) == 0
    register_model("tinynet", tiny_net.build)
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--model", "tinynet", "--dataset", "digits",
                 "--methods", "asfp", "--seeds", "0", "--epochs", "1", "--device", "cpu",
                 "--quiet"]) == 0
    assert [json.loads((d / "config.json").read_text())["model"]["name"]
            for d in out.iterdir() if (d / "config.json").exists()] == ["tinynet"]


def test_a_reference_works_in_train_resume_and_export(tiny_net, tmp_path, capsys):
    """`package.module:factory` in a YAML file: train (stopped after epoch 1), resume, export."""
    from asfp_explorer.engine import RunHandle
    from asfp_explorer.engine.events import EventKind

    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model:\n  name: asfp_tiny_net:build\n"
                         "training:\n  epochs: 2\n  device: cpu\ndata:\n  batch_size: 64\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(yaml_file), "--out", str(run), "--epochs", "1",
                 "--quiet"]) == 0
    stopped = tmp_path / "stopped"
    cfg = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    cfg = cfg.with_changes(training={"epochs": 2})
    handle = None

    def stop_after_first(event):
        if event.kind == EventKind.EPOCH_END and event.epoch == 1:
            handle.stop()

    handle = RunHandle(cfg, stopped, [stop_after_first])
    assert handle.run() == "stopped"
    assert main(["train", "--resume", str(stopped), "--quiet"]) == 0
    assert len((stopped / "metrics.jsonl").read_text().splitlines()) == 3  # epochs 0, 1, 2
    capsys.readouterr()
    assert main(["export", str(stopped), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < summary["compact_macs"] < summary["dense_macs"]
