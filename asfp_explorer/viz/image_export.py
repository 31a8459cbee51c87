"""Figures as PNG, SVG or PDF files, through plotly's optional `kaleido` package.

    save_figure(fig, "asfp.png")            # the format follows the suffix

kaleido (`pip install 'asfp-explorer[figures]'`) renders with a headless Chrome or Chromium
that it finds on the machine. Where either is missing, `FigureExportError` says so in one
line; the HTML outputs (`report --html`, `compare --html`) need neither.
"""

from __future__ import annotations

import os
from pathlib import Path

import plotly.graph_objects as go

FORMATS = ("png", "svg", "pdf")


class FigureExportError(RuntimeError):
    """A figure that cannot be written as an image; the message is one line."""


def kaleido_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def save_figure(fig: go.Figure, path: str | os.PathLike, *, width: int | None = None,
                height: int | None = None, scale: float = 2.0) -> Path:
    """Write `fig` to `path` as PNG, SVG or PDF (from the suffix); returns the path.

    `width`/`height` in CSS pixels (default: the figure's own, else 1200 x its height);
    `scale` multiplies the pixel size of a PNG (2 = sharp on high-density screens).
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise FigureExportError(f"path: {str(path)!r} must end in .png, .svg or .pdf")
    if not kaleido_available():
        raise FigureExportError("saving figures as PNG/SVG/PDF needs the optional package "
                                "kaleido: pip install 'asfp-explorer[figures]' (or kaleido)")
    if path.parent and not path.parent.is_dir():
        raise FigureExportError(f"path: the folder {str(path.parent)!r} does not exist")
    static = go.Figure(fig)  # a FigureWidget's copy: no comm traffic while it renders
    width = width or static.layout.width or 1200
    height = height or static.layout.height or 700
    try:
        static.write_image(str(path), format=fmt, width=width, height=height, scale=scale)
    except Exception as e:  # kaleido's errors are long; the first line says what broke
        text = str(e).strip().splitlines()
        hint = " (kaleido needs Chrome or Chromium installed)" if "hrome" in str(e) else ""
        raise FigureExportError(f"could not write {path.name}: "
                                f"{text[0] if text else type(e).__name__}{hint}") from e
    return path
