"""Names: a sweep's (default and checked) and its trials' names and folder names in Tune."""

from __future__ import annotations

import re
import time
from typing import Any

from contavsep_platform.spaces import SearchSpace
from contavsep_platform.sweep.error import SweepError


def _trial_name(trial: Any) -> str:
    return trial.trial_id


def _trial_dirname(trial: Any) -> str:
    # Tune's per-trial files sit next to the Train run of the same trial (named by the bare id).
    return f"tune-{trial.trial_id}"


def default_sweep_name(space: SearchSpace) -> str:
    return f"{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"


_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_sweep_name(name: str) -> str:
    """Refuse a sweep name that is not one plain path segment (it names a storage folder, an
    MLflow tag and a report folder): letters, digits, '.', '_', '-', not starting with '.', at
    most 100 characters."""
    if not _NAME_RE.fullmatch(name):
        raise SweepError(
            f"sweep name {name!r} is not valid: use 1-100 letters, digits, '.', '_' or '-', not starting"
            f" with '.' (it names a folder)"
        )
    return name
