"""Every loader reads plain data only: a checkpoint (weights_only), a run directory's layer
files (.npz without pickle) and JSON files, a YAML config (safe loader) and an .npz data set
(no pickle). Each crafted file tries to create a marker file, which never appears.
(Compact models: test_compact_loading.py.)"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from asfp_explorer.config import ConfigError, RunConfig
from asfp_explorer.data import DataError, load_npz
from asfp_explorer.store import RunDirError, load_checkpoint
from asfp_explorer.store.record import read_layer_file


class Touch:
    """Unpickling this object runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def with_checksum(path: Path, data: bytes) -> None:
    """Write `data` and a matching `.sha256`, as an attacker who rewrites both would."""
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def test_the_payload_does_run_when_unpickled(tmp_path):
    """The reference: plain pickle does run it, so the tests below can fail."""
    pickle.loads(pickle.dumps(Touch(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()


def test_checkpoint_is_loaded_with_weights_only(tmp_path):
    buf = io.BytesIO()
    torch.save({"epoch": 1, "model": Touch(tmp_path / "marker")}, buf)
    with_checksum(tmp_path / "checkpoint.pt", buf.getvalue())
    with pytest.raises(RunDirError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path)
    assert not (tmp_path / "marker").exists()


def test_layer_file_is_loaded_without_pickle(tmp_path):
    (tmp_path / "layers").mkdir()
    buf = io.BytesIO()
    np.savez(buf, sizes=np.array([2]), norms=np.zeros(2),
             masks=np.array([Touch(tmp_path / "marker")], dtype=object))
    with_checksum(tmp_path / "layers" / "000000.npz", buf.getvalue())
    with pytest.raises(RunDirError, match="not a readable layer file"):
        read_layer_file(tmp_path, 0, [2])
    assert not (tmp_path / "marker").exists()


def test_yaml_config_uses_the_safe_loader(tmp_path):
    text = f"data: !!python/object/apply:os.system ['touch {tmp_path / 'marker'}']\n"
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(text)
    assert not (tmp_path / "marker").exists()


def test_npz_data_set_is_loaded_without_pickle(tmp_path):
    path = tmp_path / "data.npz"
    objects = np.array([Touch(tmp_path / "marker")], dtype=object)
    np.savez(path, x_train=objects, y_train=np.zeros(1, dtype=np.int64), x_test=objects,
             y_test=np.zeros(1, dtype=np.int64))
    with pytest.raises(DataError):
        load_npz(path)
    assert not (tmp_path / "marker").exists()


def test_run_directory_json_files_are_never_unpickled(tmp_path):
    """A pickle in place of config.json is refused as "not valid JSON"."""
    from asfp_explorer.store import read_json_object

    (tmp_path / "config.json").write_bytes(pickle.dumps(Touch(tmp_path / "marker")))
    with pytest.raises(RunDirError, match="not valid JSON"):
        read_json_object(tmp_path / "config.json")
    assert not (tmp_path / "marker").exists()
