"""The `picospec` command. Each subcommand lives beside the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys

from picospec.errors import PicoSpecError
from picospec.options import HelpFormatter

# Modules that define `register(subparsers)`, which adds their subcommand and sets `func`.
COMMAND_MODULES = (
    "picospec.cloud.server",
    "picospec.cloud.health",
    "picospec.models.cli",
    "picospec.transport.netem",
    "picospec.app",
    "picospec.serve.cli",
    "picospec.bench.cli",
    "picospec.bench.simulate",
    "picospec.bench.loadtest",
    "picospec.certs",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand registered; every command's help shows its defaults."""
    parser = argparse.ArgumentParser(prog="picospec", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for command in all_parsers(parser):
        command.formatter_class = HelpFormatter
    return parser


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and every (sub)command parser below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found += all_parsers(sub)
    return found


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; PicoSpec's own errors print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PicoSpecError as exc:
        print(f"picospec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
