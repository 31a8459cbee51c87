"""The run lock: one writer per run directory, taken atomically.

An exclusive `fcntl.flock` on RUN_DIR/lock decides who writes; the pid inside the file only
names the holder in messages. The kernel drops the lock when its process ends however it
ends (SIGKILL included), so a lock file left behind is never mistaken for a live writer, and
two processes can never both hold it: there is no window between "create" and "write the
pid" that another process could misread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path

from .errors import RunDirError

LOCK_NAME = "lock"
_HELD: set[Path] = set()  # locks this process holds (two runs of one notebook, same folder)
_HELD_GUARD = threading.Lock()


class RunLock:
    """Exclusive lock on a run directory for the lifetime of one run."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._key: Path | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        with _HELD_GUARD:
            if key in _HELD:
                raise RunDirError(f"run_dir: {str(self.path.parent)!r} is being written by "
                                  "another run of this process; use another folder")
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    pid = _read_pid(fd)
                    os.close(fd)
                    if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise RunDirError(f"run_dir: cannot lock {str(self.path)!r} "
                                          f"({e.strerror})") from None
                    who = f"process {pid}" if pid else "another process"
                    raise RunDirError(f"run_dir: {str(self.path.parent)!r} is being written "
                                      f"by {who}; use another --out") from None
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # a releasing holder unlinked it meanwhile: lock the new file
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            os.fsync(fd)
            self._fd, self._key = fd, key
            _HELD.add(key)

    def release(self) -> None:
        """Remove the lock file and drop the lock (unlink first: see `_same_file`)."""
        if self._fd is None:
            return
        with _HELD_GUARD:
            try:
                if _same_file(self._fd, self.path):
                    self.path.unlink()
            except OSError:
                pass
            os.close(self._fd)
            _HELD.discard(self._key)
            self._fd = self._key = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (OSError, ValueError):
        return 0


def writer_alive(run_dir: str | os.PathLike) -> bool:
    """Whether a process is writing the run now (read-only: takes no lock)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        pid = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return path.resolve() in _HELD
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
