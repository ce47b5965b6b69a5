"""`picospec models`: pull, list, locate and verify the default GGUF model pair."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from picospec.errors import InvalidInputError, ModelError
from picospec.models import registry

_CACHE_HELP = "cache folder (None: $PICOSPEC_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/picospec)"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` command and its actions to the top-level parser."""
    # --cache-dir works before or after the action; SUPPRESS keeps an absent one from hiding the other.
    cache_option = argparse.ArgumentParser(add_help=False)
    cache_option.add_argument("--cache-dir", type=Path, default=argparse.SUPPRESS, help=_CACHE_HELP)
    parser = subparsers.add_parser("models", help="pull, list, locate and verify the default models")
    parser.add_argument("--cache-dir", type=Path, default=None, help=_CACHE_HELP)
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    names = ", ".join(registry.DEFAULT_MODELS)

    pull = actions.add_parser("pull", parents=[cache_option], help="download and verify models (default: all)")
    pull.add_argument("names", nargs="*", metavar="NAME", help=f"models to pull: {names}")
    pull.add_argument("--force", action="store_true", help="re-hash a pulled file and replace it if wrong")
    pull.set_defaults(func=_pull)

    listing = actions.add_parser("list", parents=[cache_option], help="show the default models and their state")
    listing.set_defaults(func=_list)

    path = actions.add_parser("path", parents=[cache_option], help="print the file path of a pulled model")
    path.add_argument("name", metavar="NAME", help=f"one of: {names}")
    path.set_defaults(func=_path)

    verify = actions.add_parser("verify", parents=[cache_option], help="re-hash pulled models (default: all)")
    verify.add_argument("names", nargs="*", metavar="NAME", help=f"models to verify: {names}")
    verify.set_defaults(func=_verify)


def _specs(names: list[str]) -> list[registry.ModelSpec]:
    """The named default models, all of them when none is named."""
    # Checked here, not with argparse choices: Python 3.11 rejects an empty `nargs="*"` list against choices.
    unknown = [name for name in names if name not in registry.DEFAULT_MODELS]
    if unknown:
        known = ", ".join(registry.DEFAULT_MODELS)
        raise InvalidInputError(f"unknown model {unknown[0]!r}: choose from {known}")
    return [registry.DEFAULT_MODELS[name] for name in names or registry.DEFAULT_MODELS]


def _pull(args: argparse.Namespace) -> int:
    for spec in _specs(args.names):
        path = registry.pull(spec, args.cache_dir, force=args.force)
        print(f"{spec.name}: {path}")
    return 0


def _state(spec: registry.ModelSpec, cache: Path | None) -> str:
    if not registry.default_path(spec, cache).is_file():
        return "missing"
    return "yes" if registry.is_verified(spec, cache) else "no"


def _list(args: argparse.Namespace) -> int:
    table = Table("name", "description", "path", "size", "verified")
    for spec in registry.DEFAULT_MODELS.values():
        path = registry.default_path(spec, args.cache_dir)
        table.add_row(spec.name, spec.description, str(path), decimal(spec.size), _state(spec, args.cache_dir))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: no screen to fit, and a folded path cannot be copied
    console.print(table)
    return 0


def _path(args: argparse.Namespace) -> int:
    spec = _specs([args.name])[0]
    print(registry.model_path(spec.name, args.cache_dir))
    return 0


def _verify(args: argparse.Namespace) -> int:
    failed = []
    for spec in _specs(args.names):
        good = registry.verify(spec, args.cache_dir)
        verdict = "ok" if good else "WRONG (size or sha256 differs)"
        print(f"{spec.name}: {verdict} {registry.default_path(spec, args.cache_dir)}")
        if not good:
            failed.append(spec.name)
    if failed:
        names = " ".join(failed)
        raise ModelError(f"{names} failed verification: run `picospec models pull --force {names}`")
    return 0
