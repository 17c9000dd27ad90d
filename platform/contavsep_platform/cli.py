"""The `contavsep` command line: one subcommand module per concept under ``commands/``.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers) -> None`` and sets
``func(args) -> int`` on its parser. Modules are imported when the parser is built, never at
import time of this file, so ``contavsep --help`` stays cheap and import-side-effect free.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing
from collections.abc import Iterator
from contextlib import contextmanager

from contavsep_platform.errors import USER_ERRORS

COMMAND_MODULES = [
    "contavsep_platform.commands.config",
    "contavsep_platform.commands.data",
    "contavsep_platform.commands.run",
    "contavsep_platform.commands.demo",
    "contavsep_platform.commands.services",
    "contavsep_platform.commands.report",
    "contavsep_platform.commands.sweep",
    "contavsep_platform.commands.study",
]


@contextmanager
def _local_services_env(enabled: bool) -> Iterator[None]:
    """While a command runs, point it at the running local services (S3 keys, MLflow) unless the
    environment already names other ones: `contavsep data synth --out s3://contavsep/...` then
    just works. The environment is restored afterwards (main() is also called in-process)."""
    if not enabled:
        yield
        return
    from contavsep_platform.settings import resolve_endpoints, service_env

    env = service_env(resolve_endpoints())
    added = [k for k in env if k not in os.environ]
    for key in added:
        os.environ[key] = env[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line naming the problem and where the help is
    (not the usage block), exit status 2. Subparsers inherit the class."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="contavsep",
        description="Hyperparameter and strategy search for continual audio-visual sound separation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command group not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _dispatch(argv)
        finally:
            sys.stdout.flush()  # inside the try: a closed pipe must not surface at interpreter exit
    except BrokenPipeError:
        # The reader went away (`contavsep services status | head`): stop quietly, as a tool killed
        # by SIGPIPE would. stdout goes to /dev/null so the exit-time flush finds no pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


def _dispatch(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _local_services_env(args.command not in ("services", "config", "demo")):  # demo starts them itself
            return int(args.func(args) or 0)
    except USER_ERRORS as exc:  # the library's error family and OS errors about given paths
        print(f"contavsep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"contavsep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
