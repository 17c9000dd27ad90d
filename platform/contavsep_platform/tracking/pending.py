"""Pending files: what a run's end keeps in the sweep's storage (``mlflow-pending.json``) when MLflow
stays unreachable, for :mod:`contavsep_platform.tracking.resend` to send later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from contavsep import storage
from contavsep.storage import S3Settings
from contavsep_platform.tracking.errors import _one_line

log = logging.getLogger("contavsep_platform.tracking")

PENDING_FORMAT = 1
PENDING_FILE = "mlflow-pending.json"  # under <storage>/sweeps/<name>/: a final flush MLflow did not get


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def _write_pending(uri: str, payload: Mapping[str, Any], s3: S3Settings | None, what: str) -> None:
    try:
        storage.write_bytes_atomic(uri, json.dumps(payload, indent=1, default=_json_default).encode(), s3)
        log.warning(
            "MLflow: kept the final results of %s in %s; `contavsep report --sweep SWEEP` or `contavsep sweep ... --resume`"
            " sends them once MLflow is back",
            what,
            uri,
        )
    except Exception as exc:  # noqa: BLE001 - storage down too: say so, the results stand in Tune and the checkpoints
        log.warning("MLflow: could not keep the final results of %s in %s either: %s", what, uri, _one_line(exc))
