"""Configuration: round trips and one-line errors that name the field."""

import pytest

from asfp_explorer.config import ConfigError, RunConfig


def test_round_trips():
    c = RunConfig().with_changes(pruning={"method": "hard-sfp", "d": 0.3},
                                 training={"lr_milestones": (0.5,)})
    assert RunConfig.from_dict(c.to_dict()) == c
    assert RunConfig.from_yaml(c.to_yaml()) == c
    assert c.pruning.schedule == "constant" and c.pruning.mode == "hard"


@pytest.mark.parametrize("section,changes,field", [
    ("pruning", {"prune_ratio": 1.0}, "pruning.prune_ratio"),
    ("pruning", {"prune_ratio": -0.1}, "pruning.prune_ratio"),
    ("pruning", {"d": 0.75}, "pruning.d"),
    ("pruning", {"d": 0}, "pruning.d"),
    ("pruning", {"interval": 0}, "pruning.interval"),
    ("pruning", {"criterion": "l3"}, "pruning.criterion"),
    ("pruning", {"method": "x"}, "pruning.method"),
    ("training", {"epochs": 0}, "training.epochs"),
    ("training", {"epochs": 2.5}, "training.epochs"),
    ("training", {"lr": 0}, "training.lr"),
    ("training", {"lr": float("inf")}, "training.lr"),
    ("training", {"device": "tpu"}, "training.device"),
    ("data", {"batch_size": 0}, "data.batch_size"),
    ("data", {"name": "mnist"}, "data.name"),
    ("model", {"name": "vgg 16"}, "model.name"),
    ("pruning", {"ratio": 0.3}, "pruning.ratio"),
])
def test_bad_values_name_the_field(section, changes, field):
    with pytest.raises(ConfigError) as e:
        RunConfig().with_changes(**{section: changes})
    msg = str(e.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_yaml_errors():
    with pytest.raises(ConfigError, match="^config:"):
        RunConfig.from_yaml("- a list")
    with pytest.raises(ConfigError, match="^training.epochs:"):
        RunConfig.from_yaml("training: {epochs: many}")
