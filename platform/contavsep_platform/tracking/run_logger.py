"""What a sweep's and a trial's run share: a client, an outbox, a spool, one run id, and the
queueing of metrics, tags, artifacts, inputs and the run's status.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from contavsep_platform.mlflow_links import run_url
from contavsep_platform.tracking.errors import _one_line
from contavsep_platform.tracking.metrics import _metrics_batches
from contavsep_platform.tracking.outbox import _Op, _Outbox, _Spool

log = logging.getLogger("contavsep_platform.tracking")


class _RunLogger:
    """What the parent and child trackers share: a client, an outbox, a spool, one run id."""

    def __init__(self, tracking_uri: str, http_timeout_s: int, max_retries: int, spool_prefix: str):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.outbox = _Outbox(tracking_uri, http_timeout_s, max_retries)
        self.spool = _Spool(spool_prefix)
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def require_run(self) -> str:
        if self.run_id is None:
            # The run could not be opened for a non-transient reason (already warned).
            raise MlflowException("no MLflow run to log to", error_code=INVALID_STATE)
        return self.run_id

    def require_experiment(self) -> str:
        """The run's experiment id: set with the run (before its id), so there whenever the run is."""
        self.require_run()
        if self.experiment_id is None:
            raise MlflowException("no MLflow experiment of the run", error_code=INVALID_STATE)
        return self.experiment_id

    def queue_metrics(self, values: Mapping[str, float], step: int, label: str) -> None:
        # The timestamp is taken now, not at send time: buffered points keep their real time.
        timestamp_ms = int(time.time() * 1000)
        for batch in _metrics_batches(values, step, timestamp_ms):
            self.outbox.add(_Op(label, partial(self.log_metrics_once, batch)))

    def log_metrics_once(self, batch: list[Metric]) -> None:
        """Log ``batch`` (one step) unless its first metric already has a point at that step.

        MLflow appends every point it is sent: a request that reached the server although its
        reply was lost, a Train restart or a ``--resume`` re-running a step, and a spooled final
        flush sent again would all duplicate the step. One history read makes each send
        idempotent; the first values logged for a step are kept.
        """
        run_id = self.require_run()
        first = batch[0]
        if any(m.step == first.step for m in self.client.get_metric_history(run_id, first.key)):
            log.info("MLflow run %s has step %d of %s already; not logged again", run_id, first.step, first.key)
            return
        self.client.log_batch(run_id, metrics=batch)

    def queue_tags(self, tags: Mapping[str, str], label: str) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self.outbox.add(_Op(label, lambda: self.client.log_batch(self.require_run(), tags=items)))

    def queue_files(self, write: Callable[[Path], object], artifact_path: str | None, label: str) -> None:
        """Write files with ``write(dir)`` now, upload ``dir``'s content under ``artifact_path``."""
        directory = self.spool.new_dir()
        try:
            write(directory)
        except Exception as exc:  # noqa: BLE001 - an artifact that cannot be drawn must not end a trial
            log.warning("could not write %s: %s", label, _one_line(exc))
            shutil.rmtree(directory, ignore_errors=True)
            return
        self.outbox.add(
            _Op(
                label,
                lambda: self.client.log_artifacts(self.require_run(), str(directory), artifact_path),
                cleanup=lambda: shutil.rmtree(directory, ignore_errors=True),
            )
        )

    def queue_text(self, name: str, text: str, artifact_path: str | None = None) -> None:
        self.queue_files(lambda d: (d / name).write_text(text), artifact_path, f"artifact {name}")

    def queue_inputs(self, dataset: DatasetInput) -> None:
        # MLflow keeps one input per (run, dataset): logging it again (restart, resume) adds nothing.
        self.outbox.add(
            _Op(
                f"dataset input {dataset.dataset.name}",
                lambda: self.client.log_inputs(self.require_run(), datasets=[dataset]),
            )
        )

    def queue_status(self, status: str) -> None:
        self.outbox.add(_Op(f"run status {status}", lambda: self.client.set_terminated(self.require_run(), status)))

    def finish_outbox(self, timeout_s: float, what: str) -> bool:
        ok = self.outbox.drain(timeout_s)
        if not ok:
            labels = [op.label for op in self.outbox.pending]
            log.warning(
                "MLflow at %s stayed unreachable for %.0f s at the end of %s: %d item(s) not logged (%s)%s",
                self.tracking_uri,
                timeout_s,
                what,
                len(labels),
                ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else ""),
                f"; local copies of artifacts stay in {self.spool.root}" if self.spool.root else "",
            )
        else:
            self.spool.remove_if_empty()
        return ok

    def ui_url(self) -> str | None:
        if self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)
