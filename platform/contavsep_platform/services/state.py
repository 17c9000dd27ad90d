"""The state folder of the local services: its layout, the state file, the S3 keys file and the lock.

``<state_dir>/services.json`` (records and ports, written here, read by
:func:`contavsep_platform.settings.read_state`), ``<state_dir>/s3-keys.json`` (0600),
``<state_dir>/services.lock`` (one ``up`` or ``down`` at a time), and the folders ``logs/``,
``s3/`` and ``mlflow/``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from contavsep_platform.settings import KEYS_FILE, STATE_FILE, ServicesState, write_private


def write_state(state_dir: Path, state: ServicesState) -> None:
    write_private(state_dir / STATE_FILE, json.dumps(state.to_json(), indent=2) + "\n")


def ensure_keys(state_dir: Path) -> None:
    """Create the S3 keys file once; later runs reuse it (clients keep working across restarts)."""
    path = state_dir / KEYS_FILE
    if path.exists():
        os.chmod(path, 0o600)
        return
    keys = {"access_key": "contavsep-" + secrets.token_hex(8), "secret_key": secrets.token_hex(24)}
    write_private(path, json.dumps(keys, indent=2) + "\n")


def state_lock(state_dir: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(state_dir / "services.lock"), timeout=900)


def prepare_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("logs", "s3", "mlflow"):
        (state_dir / sub).mkdir(exist_ok=True)
