"""`asfp-explorer report RUN_DIR --html out.html`: one run's figures as a static HTML page.

The page inlines plotly.js, so it opens from disk with no server and no internet.
"""

from __future__ import annotations

from pathlib import Path

from .figure_files import add_figure_options, save_figures
from .html_output import write_page


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML page of one run's figures")
    p.add_argument("run_dir", help="a run directory (finished, stopped or still running)")
    p.add_argument("--html", metavar="OUT", default=None,
                   help="where to write the page (default: RUN_DIR/report.html)")
    p.add_argument("--fvcore", action="store_true",
                   help="also count the compact model's conv MACs with fvcore at every mask "
                        "update (traces the model once per distinct set of kept counts)")
    add_figure_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store import RunDirError, check_path_names, load_run
    from ..viz.compare import report_figures, report_html

    data = load_run(args.run_dir)
    out = Path(args.html) if args.html else Path(args.run_dir) / "report.html"
    check_path_names("html", out)
    if out.exists() and not out.is_file():  # a device node or folder is never replaced
        raise RunDirError(f"html: {str(out)!r} exists and is not a regular file; choose a "
                          "file path")
    fv = _fvcore_counts(data) if args.fvcore else None
    status = write_page("report", out, lambda: report_html(data, out, fvcore_macs=fv))
    if status == 0 and args.figures:
        status = save_figures("report", report_figures(data, fv), args.figures, args.format,
                              stem=data.name)
    return status


def _fvcore_counts(data) -> dict[int, int]:
    from ..viz.compact_macs import compact_conv_macs

    cache: dict[tuple[int, ...], int] = {}
    out = {}
    for m, masks in zip(data.metrics, data.masks):
        if not m.get("masks_updated"):
            continue
        key = tuple(int(x.sum()) for x in masks)
        if key not in cache:
            cache[key] = compact_conv_macs(data.config, data.info, masks)
        out[m["epoch"]] = cache[key]
    return out
