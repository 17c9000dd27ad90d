"""The `contavsep` command line: one subcommand module per concept under ``commands/``.

Each module in :data:`COMMAND_MODULES` exposes ``register(subparsers) -> None`` and sets
``func(args) -> int`` on its parser. Modules are imported when the parser is built, never at
import time of this file, so ``contavsep --help`` stays cheap and import-side-effect free.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from contavsep.config import ConfigError
from contavsep.registry import RegistryError


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or settings: one line on stderr, exit 2, no traceback."""
    from contavsep.checkpoint import CheckpointError
    from contavsep.data.manifest import DatasetError
    from contavsep.storage import StorageError

    return (UserError, ConfigError, RegistryError, FileNotFoundError, StorageError, DatasetError, CheckpointError)

COMMAND_MODULES = [
    "contavsep_platform.commands.config",
    "contavsep_platform.commands.data",
    "contavsep_platform.commands.run",
    "contavsep_platform.commands.demo",
    "contavsep_platform.commands.services",
    "contavsep_platform.commands.report",
    "contavsep_platform.commands.sweep",
]


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""


def _use_local_services() -> None:
    """Point this process at the running local services (S3 keys, MLflow) unless the environment
    already names other ones: `contavsep data synth --out s3://contavsep/...` then just works."""
    import os

    from contavsep_platform.settings import resolve_endpoints, service_env

    for key, value in service_env(resolve_endpoints()).items():
        os.environ.setdefault(key, value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
    user_errors = _user_errors()
    try:
        if args.command not in ("services", "config"):
            _use_local_services()
        return int(args.func(args) or 0)
    except user_errors as exc:
        print(f"contavsep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"contavsep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
