"""The `vsyn` command: one front for pack, train, launch, eval, export and serve.

vsyn's own subcommands live in `vsyn.commands.*`; the infra packages (shards, launcher, serve) contribute theirs
through the `vsyn.commands` entry-point group declared in pyproject.toml, so vsyn never imports them.
Every subcommand module exposes `register(subparsers)`, which adds a parser and sets `func=handler(args) -> int`.

Every failure a user can fix ends as one `vsyn: error: ...` line on stderr with exit code 2 (`-v` shows the
traceback instead); Ctrl-C outside training ends with `vsyn: interrupted` and exit code 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Callable, Iterator

from vsyn import __version__
from vsyn.console import configure
from vsyn.errors import VsynError

BUILTIN_COMMANDS = ("vsyn.commands.train", "vsyn.commands.animate", "vsyn.commands.info", "vsyn.commands.eval")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends '(default: X)' to an option's help unless the help already names its default or there is none
    worth showing (None, False, empty)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or (isinstance(default, (str, list)) and not default)
        if not text or "default" in text.lower() or nothing or default == argparse.SUPPRESS or not action.option_strings:
            return action.help
        return f"{text} (default: %(default)s)"


class IntermixedParser(argparse.ArgumentParser):
    """A sub-command's parser that lets options sit between positionals (`vsyn train tiny-cpu -v key=value`, `vsyn
    shards pack videos a/ -v b/ OUT`): plain argparse stops filling a list positional at the first option."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        if self._inside:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


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


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from _all_parsers(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vsyn", description="Bring a still landscape photo to life.")
    parser.add_argument("--version", action="version", version=f"vsyn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, library warnings and full "
                        "tracebacks (also after the subcommand)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _builtin_registrars():
        register(sub)
    for name, register in _plugin_registrars():
        if isinstance(register, Exception):
            broken = sub.add_parser(name, help=f"(unavailable: {register})")
            broken.set_defaults(func=lambda args, exc=register, n=name: _unavailable(n, exc))
        else:
            register(sub)
    for p in _all_parsers(parser):
        own = p.formatter_class
        if own is argparse.HelpFormatter:
            p.formatter_class = DefaultsHelpFormatter
        elif not issubclass(own, DefaultsHelpFormatter):  # e.g. a raw description: keep it, add the defaults
            p.formatter_class = type(f"Defaults{own.__name__}", (DefaultsHelpFormatter, own), {})
        if p is not parser and "-v" not in p._option_string_actions:
            # SUPPRESS: a subcommand's own default must not overwrite a -v given before the subcommand
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help="as `vsyn -v`")
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if p is not parser and leaf and not isinstance(p, IntermixedParser):
            p.__class__ = type(f"Intermixed{type(p).__name__}", (IntermixedParser, type(p)), {})
    return parser


def _unavailable(name: str, exc: Exception) -> int:
    raise VsynError(f"'vsyn {name}' is unavailable: {exc} (install the matching extra, e.g. pip install 'vsyn[dev]')")


def _os_error_line(exc: OSError) -> str:
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{where}: {exc.strerror or exc}" if where else str(exc)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except VsynError as exc:
        if args.verbose:
            raise
        print(f"vsyn: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `vsyn ... | head`: the reader left; end as quietly as a tool killed by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the file system said no (exists, is a folder, permission, disk full): the user's to fix
        if args.verbose:
            raise
        print(f"vsyn: error: {_os_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vsyn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
