"""`asfp-explorer`: schedule | flops | train | show | export | compare | report.

Wrong arguments and bad input exit with status 2 and one line naming the argument and what
is allowed; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("schedule", "flops", "train", "show", "export", "compare", "report")


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


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as e:
        print(f"asfp-explorer {args.command}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # RunDirError and schedule errors are ValueErrors with one line
        from .store import RunDirError

        if isinstance(e, RunDirError) or type(e) is ValueError:
            print(f"asfp-explorer {args.command}: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
