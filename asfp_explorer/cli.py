"""`asfp-explorer`: schedule | flops | train | study | show | export | compare | report | presets.

Wrong arguments and bad input exit with status 2 and one line naming the argument and what
is allowed; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("schedule", "flops", "train", "study", "show", "export", "compare", "report",
               "presets")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="asfp-explorer",
                           description="See and steer (asymptotic) soft filter pruning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser,
                                metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name in SUBCOMMANDS:
        importlib.import_module(f"asfp_explorer.commands.{name}").add_parser(sub)
    return parser


def _loaded_class(module: str, name: str) -> type:
    """`module.name` if the module was imported by now, else a class nothing is an instance
    of: an error can only come from a module that ran, and importing data.py (torch, ~1.5 s)
    just to name its error would slow every command down."""
    return getattr(sys.modules.get(module), name, _NeverRaised)


class _NeverRaised(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C while a command starts up or reads: no traceback
        print(f"asfp-explorer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        data_error = _loaded_class("asfp_explorer.data", "DataError")
        run_dir_error = _loaded_class("asfp_explorer.store", "RunDirError")
        compact_error = _loaded_class("asfp_explorer.export.vocabulary", "CompactFormatError")
        # RunDirError and schedule errors are ValueErrors with one line
        if isinstance(e, (ConfigError, data_error, run_dir_error, compact_error)) or type(e) is ValueError:
            print(f"asfp-explorer {args.command}: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
