"""What belongs to a run directory, so that `--overwrite` and a restart delete only that."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .checksums import SUFFIX
from .errors import RunDirError
from .lock import LOCK_NAME

FILES = ("config.json", "environment.json", "run_start.json", "metrics.jsonl", "events.jsonl",
         "summary.json", "checkpoint.pt")
# Written by the tool into a run directory besides the record: checksums, `report`'s default
# page, `export`'s and the dashboard's export folder, the dashboard's saved figures.
OWN_ENTRIES = set(FILES) | {"layers", LOCK_NAME, "checkpoint.pt" + SUFFIX, "report.html",
                            "export", "figures"}
_TEMP = re.compile(r"^\..+\.tmp$")


def recorded_entries(run_dir: Path) -> list[Path]:
    """Entries of `run_dir` other than the lock and temporary files."""
    if not run_dir.is_dir():
        return []
    return [c for c in run_dir.iterdir() if c.name != LOCK_NAME and not _TEMP.match(c.name)]


def check_only_run_entries(run_dir: Path) -> None:
    """Refuse a folder holding anything a run does not write (it is not a run directory)."""
    for child in sorted(run_dir.iterdir()):
        if child.name not in OWN_ENTRIES and not _TEMP.match(child.name):
            raise RunDirError(f"out: {str(run_dir)!r} holds {child.name!r}, which no run "
                              "writes; it is not a run directory, so it is not replaced "
                              "(choose another --out)")


def clear_run_dir(run_dir: Path) -> None:
    """Delete a run directory's entries (not the lock); a symlink is removed, never followed."""
    check_only_run_entries(run_dir)
    for child in run_dir.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_symlink() or not child.is_dir():
            child.unlink()
        else:
            shutil.rmtree(child)
