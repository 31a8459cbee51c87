"""The papers' presets: each names a row of spec §9 and carries the recipe of spec §8."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from asfp_explorer.cli import build_parser
from asfp_explorer.commands.train import config_from_args
from asfp_explorer.config import ConfigError
from asfp_explorer.presets import PAPER_PRESETS, paper_preset

NAME = re.compile(r"(cifar10|imagenet)-(resnet\d+)-(sfp|asfp|fpgm)-(0\.\d+)(-pretrained)?")


@pytest.mark.parametrize("name", list(PAPER_PRESETS))
def test_every_preset_is_its_name_with_the_papers_recipe(name):
    data_set, model, method, ratio, pretrained = NAME.fullmatch(name).groups()
    c = paper_preset(name).config("somewhere")
    assert c.model.name == model and c.pruning.prune_ratio == float(ratio)
    assert (c.pruning.method, c.pruning.criterion) == (
        {"fpgm": ("sfp", "fpgm")}.get(method, (method, "l2")))
    t = c.training
    if data_set == "cifar10":  # 200 epochs, batch 128, x0.2 at 60/120/160, wd 5e-4
        assert (c.data.name, c.data.batch_size, t.epochs) == ("cifar10", 128, 200)
        assert t.milestone_epochs() == [60, 120, 160] and t.lr_gamma == 0.2
        assert t.weight_decay == 5e-4
    else:  # 100 epochs, batch 256, x0.1 every 30, wd 1e-4, 224 crops
        assert (c.data.name, c.data.batch_size, t.epochs) == ("imagefolder", 256, 100)
        assert t.milestone_epochs() == [30, 60, 90] and t.lr_gamma == 0.1
        assert t.weight_decay == 1e-4 and c.data.image_size == 224
    assert t.nesterov and t.momentum == 0.9
    assert t.lr == pytest.approx(0.1 / 10 if pretrained else 0.1)
    assert paper_preset(name).published


def test_the_tables_rows_are_all_there():
    names = set(PAPER_PRESETS)
    for row in ("cifar10-resnet20-sfp-0.3", "cifar10-resnet32-sfp-0.3",
                "cifar10-resnet56-sfp-0.4", "cifar10-resnet110-sfp-0.3",
                "cifar10-resnet56-fpgm-0.4", "cifar10-resnet56-asfp-0.4",
                "imagenet-resnet18-sfp-0.3", "imagenet-resnet34-sfp-0.3",
                "imagenet-resnet50-sfp-0.3", "imagenet-resnet50-sfp-0.3-pretrained",
                "imagenet-resnet50-fpgm-0.3-pretrained"):
        assert row in names
    assert "93.59 ± 0.58 -> 92.26 ± 0.31" in PAPER_PRESETS["cifar10-resnet56-sfp-0.4"].published


def _args(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_train_flags_override_a_preset():
    c = _args("--preset", "cifar10-resnet56-asfp-0.4", "--data-path", "cifar", "--epochs", "3")
    assert (c.training.epochs, c.data.path, c.model.name) == (3, "cifar", "resnet56")
    c = _args("--preset", "imagenet-resnet50-sfp-0.3-pretrained", "--data-path", "in",
              "--weights", "r50.pt", "--workers", "8")
    assert (c.model.weights, c.data.workers, c.data.path) == ("r50.pt", 8, "in")


@pytest.mark.parametrize("argv, message", [
    (["--preset", "cifar10-resnet1-sfp-0.3"], "preset: 'cifar10-resnet1-sfp-0.3' is not a preset"),
    (["--preset", "imagenet-resnet50-sfp-0.3-pretrained"], "model.weights: .* --weights FILE"),
    (["--preset", "cifar10-resnet56-sfp-0.4", "--config", "x.yaml"], "preset: not allowed"),
])
def test_bad_preset_use_is_one_line(argv, message):
    with pytest.raises(ConfigError, match=message):
        _args(*argv)


def test_presets_command_lists_every_preset_with_what_it_reproduces():
    out = subprocess.run([sys.executable, "-m", "asfp_explorer.cli", "presets"],
                         capture_output=True, text=True, check=True).stdout
    for p in PAPER_PRESETS.values():
        assert p.name in out and p.published in out
