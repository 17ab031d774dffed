"""The ``squeezelab`` command. Each ``*_cmd.py`` module in this package adds subcommands.

A command module defines ``register(subparsers)``; each subcommand sets ``func`` (taking the parsed
arguments, returning an exit code or None) with ``parser.set_defaults(func=...)``. Command modules
import torch and the heavy parts of the library inside ``func`` so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys

from squeezelab.errors import SqueezelabError

EXIT_USER_ERROR = 2
EXIT_ENVIRONMENT = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the valid choices) and exit code 2."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="squeezelab",
        description="SqueezeNet (Iandola et al.) and its reproductions: build, train, evaluate, convert.",
    )
    from squeezelab import __version__

    parser.add_argument("--version", action="version", version=f"squeezelab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd")):
        importlib.import_module(f"{__name__}.{mod}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from squeezelab.cli.compress_cmd import normalise_argv

    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help / --version / a usage error: the code argparse chose
        return int(exit_.code or 0)
    try:
        code = args.func(args)
    except SqueezelabError as err:
        print(f"squeezelab {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", EXIT_USER_ERROR)
    except OSError as err:  # the environment (disk full, read-only, permission) refused something
        where = f"{err.filename}: " if err.filename else ""
        if err.errno == errno.ENAMETOOLONG:  # the user's path, not the environment
            print(f"squeezelab {args.command}: error: {where}a file or folder name longer than this system allows; "
                  f"choose a shorter path", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"squeezelab {args.command}: error: {where}{err.strerror or err} (free space, or choose a folder "
              f"this user may write)", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print(f"squeezelab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
