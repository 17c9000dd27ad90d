"""Sending later what MLflow missed: the pending files of a sweep and of its trials."""

from __future__ import annotations

import json
import logging

from contavsep import storage
from contavsep.storage import S3Settings
from contavsep_platform.tracking.pending import PENDING_FILE
from contavsep_platform.tracking.run_logger import _RunLogger
from contavsep_platform.tracking.sweep_run import SweepTracker, _queue_end
from contavsep_platform.tracking.trial_run import _queue_trial_final

log = logging.getLogger("contavsep_platform.tracking")


def send_pending(
    tracking_uri: str, pending_uri: str, s3: S3Settings | None = None, timeout_s: float = 30.0
) -> bool | None:
    """Send a final flush that MLflow missed (a sweep's or a trial's pending file), then delete
    the file. Returns None when nothing was pending, else whether it was sent."""
    if not storage.exists(pending_uri, s3):
        return None
    payload = json.loads(storage.read_bytes(pending_uri, s3))
    run_log = _RunLogger(tracking_uri, 5, 1, "contavsep-mlflow-pending-")
    run_log.run_id, run_log.experiment_id = str(payload["run_id"]), payload.get("experiment_id")
    if payload.get("role") == "trial":
        what = f"trial {payload.get('trial')}"
        _queue_trial_final(run_log, payload.get("summary") or {}, str(payload.get("config_yaml", "")))
    else:
        what = f"sweep {payload.get('sweep')}"
        _queue_end(SweepTracker(tracking_uri, str(payload["experiment"]), str(payload["sweep"])), run_log, payload)
    if not run_log.finish_outbox(timeout_s, f"the pending results of {what}"):
        return False
    storage.delete_prefix(pending_uri, s3)
    log.warning("MLflow: sent the final results of %s kept in %s", what, pending_uri)
    return True


def send_all_pending(
    tracking_uri: str, sweep_uri: str, s3: S3Settings | None = None, timeout_s: float = 30.0
) -> tuple[int, int]:
    """Send every pending final flush of the sweep at ``sweep_uri`` (its own and its trials');
    returns (sent, still pending)."""
    sent = left = 0
    for rel in storage.list_dir(sweep_uri, s3, recursive=True):
        if rel == PENDING_FILE or rel.endswith("/" + PENDING_FILE) and rel.count("/") == 1:
            ok = send_pending(tracking_uri, storage.join(sweep_uri, rel), s3, timeout_s)
            sent += ok is True
            left += ok is False
    return sent, left
