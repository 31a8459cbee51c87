"""Writing a static HTML page from a subcommand: one line on success, one line and exit 2 when
the file cannot be written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable


def write_page(command: str, target: str | Path, write: Callable[[], Path]) -> int:
    """Call `write()` (which writes `target` and returns its path); report it; exit status."""
    try:
        path = write()
    except OSError as e:
        print(f"asfp-explorer {command}: --html: cannot write {str(target)!r} ({e.strerror})",
              file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens without a server)")
    return 0
