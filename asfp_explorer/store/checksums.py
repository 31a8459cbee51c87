"""sha256 of checkpoint and layer files, kept beside each file as `NAME.sha256`.

While a file is being replaced, its checksum file lists the new hash and the old one (the
first line of the previous checksum file): written before the rename, narrowed to the new
hash after it. A crash at any point therefore leaves a file whose hash is listed, while a
file changed by anything else (flipped bytes, a truncation, an edit) is not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import RunDirError

SUFFIX = ".sha256"
_READ_TRIES = 3  # a reader racing the writer sees at most one replacement in between


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _accepted(path: Path) -> list[str]:
    try:
        return checksum_path(path).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return []


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_checksum_before(path: Path, data: bytes) -> str:
    """Before `path` is replaced by `data`: list the new hash and the current one."""
    digest = sha256(data)
    old = _accepted(path)[:1] if path.exists() else []
    _write(checksum_path(path), "\n".join([digest, *old]) + "\n")
    return digest


def write_checksum_after(path: Path, digest: str) -> None:
    """After the rename: only the new hash is accepted."""
    _write(checksum_path(path), digest + "\n")


def read_verified(path: Path) -> bytes:
    """The bytes of `path` if their sha256 is the one recorded beside it.

    Raises `ChecksumError` (a ValueError) with one line otherwise.
    """
    path = Path(path)
    if not checksum_path(path).exists():
        raise ChecksumError(f"{path}: its checksum file {checksum_path(path).name} is "
                            "missing, so the file cannot be trusted")
    for _ in range(_READ_TRIES):
        data = path.read_bytes()
        if sha256(data) in _accepted(path):
            return data
    if not data:
        raise ChecksumError(f"{path}: is empty (0 bytes); the file was truncated")
    raise ChecksumError(f"{path}: its sha256 does not match {checksum_path(path).name}; the "
                        "file was changed or damaged after it was written")


class ChecksumError(RunDirError):
    """A file whose content is not the content that was written."""
