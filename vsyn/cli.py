"""The `vsyn` command: one front for pack, train, launch, eval, export and serve.

vsyn's own subcommands live in `vsyn.commands.*`; the infra packages (shards, launcher, serve) contribute theirs
through the `vsyn.commands` entry-point group declared in pyproject.toml, so vsyn never imports them.
Every subcommand module exposes `register(subparsers)`, which adds a parser and sets `func=handler(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points
from typing import Callable

from vsyn.errors import VsynError

BUILTIN_COMMANDS = ("vsyn.commands.train", "vsyn.commands.animate", "vsyn.commands.info", "vsyn.commands.eval")


def _builtin_registrars() -> list[Callable]:
    registrars = []
    for name in BUILTIN_COMMANDS:
        try:
            registrars.append(importlib.import_module(name).register)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return registrars


def _plugin_registrars() -> list[tuple[str, Callable | Exception]]:
    found = []
    for ep in sorted(entry_points(group="vsyn.commands"), key=lambda e: e.name):
        try:
            found.append((ep.name, ep.load()))
        except Exception as exc:  # a broken or uninstalled extra must not take the whole CLI down
            found.append((ep.name, exc))
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsyn", description="Bring a still landscape photo to life.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _builtin_registrars():
        register(sub)
    for name, register in _plugin_registrars():
        if isinstance(register, Exception):
            broken = sub.add_parser(name, help=f"(unavailable: {register})")
            broken.set_defaults(func=lambda args, exc=register, n=name: _unavailable(n, exc))
        else:
            register(sub)
    return parser


def _unavailable(name: str, exc: Exception) -> int:
    raise VsynError(f"'vsyn {name}' is unavailable: {exc} (install the matching extra, e.g. pip install 'vsyn[dev]')")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VsynError as exc:
        if args.verbose:
            raise
        print(f"vsyn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vsyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
