"""Files of a run directory: atomic replacement, whole-line appends, torn tails, path checks.

Every file is replaced atomically (temporary file, flush, fsync, rename); JSON-lines files grow
a whole line at a time and a line cut off by a crash (no final newline) is cut away before the
next append, so one torn write never spoils the lines written after it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .checksums import write_checksum_after, write_checksum_before
from .errors import RunDirError

NAME_MAX_BYTES = 255  # longest file name of the usual file systems (ext4, xfs, apfs, ntfs)
TEMP_SUFFIX = ".tmp"


# ------------------------------------------------------------------ atomic writes

def user_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process's umask. The umask is read
    from /proc where it can be, because os.umask() can only be read by setting it, which
    would briefly change it for every thread."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes, *, checksum: bool = False) -> None:
    """Replace `path` by `data` atomically; with `checksum`, keep its sha256 beside it.

    The checksum file lists the old and the new hash while the rename happens, so a crash
    at any point leaves a file that verifies (see checksums.py).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        # mkstemp makes the file owner-only; give it the mode open() would (the user's umask)
        os.fchmod(fd, user_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        digest = write_checksum_before(path, data) if checksum else None
        os.replace(tmp, path)
        if digest is not None:
            write_checksum_after(path, digest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=json_default) + "\n").encode())


def atomic_torch_save(obj: Any, path: Path, *, checksum: bool = True) -> None:
    """torch.save, atomically, with a sha256 beside the file (checked when it is loaded)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), checksum=checksum)


def atomic_savez(path: Path, *, checksum: bool = True, **arrays: np.ndarray) -> None:
    """A compressed .npz, atomically, with a sha256 beside it."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue(), checksum=checksum)


def append_line(path: Path, obj: Any) -> None:
    """Append one JSON line with a single write, flushed to disk; a torn last line (a crash
    in the middle of the previous append) is cut away first."""
    line = json.dumps(obj, default=json_default) + "\n"
    cut_torn_tail(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def cut_torn_tail(path: Path) -> int:
    """Truncate a JSON-lines file after its last newline; returns the bytes removed."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            f.seek(0)
            keep = f.read().rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return size - keep
    except FileNotFoundError:
        return 0


def json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Mapping):
        return dict(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def plain(obj: Any) -> Any:
    """The JSON form of `obj` (tuples become lists), so live and loaded records compare equal."""
    return json.loads(json.dumps(obj, default=json_default))


# ------------------------------------------------------------------ reading

def read_jsonl(path: Path) -> list[dict]:
    """Every complete line as a mapping; a cut-off last line (a crash mid-write, no final
    newline) is dropped with a warning. Anything else unreadable is a one-line RunDirError."""
    return [row for row, _ in read_jsonl_lines(path)]


def read_jsonl_lines(path: Path) -> list[tuple[dict, str]]:
    """Like `read_jsonl`, with each row's original text (newline included)."""
    path = Path(path)
    if not path.exists():
        return []
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise RunDirError(f"{path}: line {line} is not text (binary data; damaged?)") from None
    rows = []
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.endswith("\n") and i == len(lines) - 1:
            warnings.warn(f"{path.name}: the last line is incomplete (a crash while "
                          f"writing?); loaded the {len(rows)} complete lines", RuntimeWarning, stacklevel=2)
            break
        try:
            row = json.loads(line)
        except ValueError:
            raise RunDirError(f"{path}: line {i + 1} is not valid JSON (damaged?)") from None
        if not isinstance(row, dict):
            raise RunDirError(f"{path}: line {i + 1} is a JSON {type(row).__name__}, "
                              "expected an object")
        rows.append((row, line))
    return rows


def read_json_object(path: Path, required: bool = True) -> dict[str, Any]:
    """A JSON file holding one object; missing (unless optional) or anything else is a
    one-line RunDirError naming the file."""
    path = Path(path)
    if not path.exists():
        if not required:
            return {}
        raise RunDirError(f"{path}: missing; the run directory is incomplete")
    raw = _read_bytes(path)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise RunDirError(f"{path}: not valid JSON (damaged?)") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path}: holds a JSON {type(obj).__name__}, expected an object")
    return obj


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise RunDirError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None


# ------------------------------------------------------------------ paths

def check_path_names(field: str, path: str | os.PathLike) -> Path:
    """`path` as a Path; a component longer than the file system allows is a RunDirError."""
    p = Path(path)
    for part in p.parts:
        n = len(os.fsencode(part))
        if n > NAME_MAX_BYTES:
            raise RunDirError(f"{field}: the name {part[:24]!r}... is {n} bytes long; file "
                              f"names are limited to {NAME_MAX_BYTES} bytes")
    return p


def check_folder_path(field: str, path: str | os.PathLike) -> Path:
    """A path that is, or can become, a folder: not a file, not below a file, short names."""
    p = check_path_names(field, path)
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{field}: {str(p)!r} is a file, expected a folder")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunDirError(f"{field}: {str(p)!r} lies below {str(parent)!r}, which is "
                                  "a file, not a folder")
            break
    return p


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Temporary files that a killed writer left (call only while holding the run lock)."""
    removed = []
    for folder in (run_dir, run_dir / "layers"):
        if folder.is_dir():
            for f in folder.glob(f".*{TEMP_SUFFIX}"):
                if f.is_file() and not f.is_symlink():
                    f.unlink(missing_ok=True)
                    removed.append(f)
    return removed
