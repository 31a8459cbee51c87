"""`asfp-explorer compare RUN_DIR... [--html out.html]`: several runs side by side.

Runs whose configurations differ only in the seed are grouped (mean ± std). Prints one line
per group; with --html, also writes the comparison figures as a self-contained page.
"""

from __future__ import annotations

from .figure_files import add_figure_options, save_figures
from .html_output import write_page


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare runs (seeds grouped as mean ± std)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--html", metavar="OUT", default=None,
                   help="write the comparison figures to this HTML file (inline plotly.js)")
    p.add_argument("--label", action="append", default=None, metavar="TEXT",
                   help="name of a group, in order of first appearance (repeatable)")
    add_figure_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..store import load_run
    from ..viz.compare import compare_figures, compare_html, group_runs, summary_rows

    runs = [load_run(d) for d in args.run_dirs]
    rows = summary_rows(group_runs(runs, args.label))
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    print("  ".join(f"{k:<{widths[k]}}" for k in widths).rstrip())
    for r in rows:
        print("  ".join(f"{r[k]:<{widths[k]}}" for k in widths).rstrip())
    if args.html:
        status = write_page("compare", args.html,
                            lambda: compare_html(runs, args.html, args.label))
        if status:
            return status
    if args.figures:
        return save_figures("compare", compare_figures(runs, args.label), args.figures,
                            args.format, stem="compare")
    return 0
