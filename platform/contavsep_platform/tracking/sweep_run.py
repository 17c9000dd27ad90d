"""The sweep's parent run (:class:`SweepTracker`), its end, and the MLflow UI links a command ends with."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, Metric

from contavsep.metric_names import GPUS_METRIC, WORKER_NODES_METRIC
from contavsep.storage import S3Settings
from contavsep_platform.artifacts import safe_name
from contavsep_platform.mlflow_links import link_lines
from contavsep_platform.tracking.errors import TrackingUnavailableError, _one_line, is_transient
from contavsep_platform.tracking.experiments import experiment_id
from contavsep_platform.tracking.http_limits import short_http_requests
from contavsep_platform.tracking.metrics import summary_metrics
from contavsep_platform.tracking.outbox import _Op
from contavsep_platform.tracking.pending import PENDING_FORMAT, _write_pending
from contavsep_platform.tracking.run_logger import _RunLogger
from contavsep_platform.tracking.tags import PARETO_TAG, ROLE_TAG, SWEEP_TAG, TRIAL_TAG, _quoted

if TYPE_CHECKING:
    from contavsep_platform.cluster_nodes import NodeCount

log = logging.getLogger("contavsep_platform.tracking")


class SweepTracker:
    """The parent run of one sweep. ``tracking_uri=None`` disables tracking (every call no-ops).

    Args:
        tracking_uri: MLflow tracking server URI, or None for no tracking.
        experiment: MLflow experiment name (created if missing).
        sweep_name: the sweep's name; the run of a resumed sweep is found by it.
        http_timeout_s / max_retries: per-request limits while talking to the server.
        connect_timeout_s: how long :meth:`start` waits for an unreachable server.
        flush_timeout_s: how long :meth:`finish` waits to send what is still queued.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment: str,
        sweep_name: str,
        *,
        http_timeout_s: int = 5,
        max_retries: int = 1,
        connect_timeout_s: float = 30.0,
        flush_timeout_s: float = 30.0,
    ):
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.connect_timeout_s = connect_timeout_s
        self.flush_timeout_s = flush_timeout_s
        _quoted(sweep_name, "sweep name")
        self._log = (
            _RunLogger(tracking_uri, http_timeout_s, max_retries, f"contavsep-mlflow-{safe_name(sweep_name)}-")
            if tracking_uri
            else None
        )

    @property
    def enabled(self) -> bool:
        return self._log is not None

    @property
    def parent_run_id(self) -> str | None:
        return self._log.run_id if self._log else None

    def ui_url(self) -> str | None:
        """The parent run's page in the MLflow UI (None without tracking)."""
        return self._log.ui_url() if self._log else None

    def _open(self, run_log: _RunLogger) -> None:
        client = run_log.client
        run_log.experiment_id = experiment_id(client, self.experiment)
        found = client.search_runs(
            [run_log.experiment_id],
            f"tags.`{SWEEP_TAG}` = {_quoted(self.sweep_name, 'sweep name')} and tags.`{ROLE_TAG}` = 'sweep'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if found:
            run_log.run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                client.update_run(run_log.run_id, status="RUNNING")
            log.info("MLflow: continuing the parent run %s of sweep %s", run_log.run_id, self.sweep_name)
        else:
            run = client.create_run(
                run_log.experiment_id, run_name=self.sweep_name, tags={SWEEP_TAG: self.sweep_name, ROLE_TAG: "sweep"}
            )
            run_log.run_id = run.info.run_id

    def start(self, space_yaml_text: str, tags: Mapping[str, str], dataset: DatasetInput | None = None) -> str | None:
        """Open (or, for a resumed sweep, re-open) the parent run; log the space, tags and
        ``dataset`` (:func:`dataset_input`).

        Returns the parent run id, or None when tracking is disabled. Raises
        :class:`TrackingUnavailableError` when the server stays unreachable for
        ``connect_timeout_s`` or refuses the run: better no sweep than an untracked one.
        """
        run_log = self._log
        if run_log is None:
            return None
        deadline = time.monotonic() + self.connect_timeout_s
        pause = 0.5
        while True:
            try:
                with short_http_requests(run_log.outbox.http_timeout_s, run_log.outbox.max_retries):
                    self._open(run_log)
                break
            except Exception as exc:  # noqa: BLE001 - turned into one clear error below
                transient = is_transient(exc)
                if not transient or time.monotonic() >= deadline:
                    if transient:
                        message = (
                            f"MLflow at {run_log.tracking_uri} is unreachable ({_one_line(exc)}); start the local"
                            " services (`contavsep services up`) or set MLFLOW_TRACKING_URI"
                        )
                    else:
                        message = f"MLflow at {run_log.tracking_uri} refused the sweep's run: {_one_line(exc)}"
                    raise TrackingUnavailableError(message) from exc
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 5.0)
        run_log.queue_tags({**tags, SWEEP_TAG: self.sweep_name, ROLE_TAG: "sweep"}, "sweep tags")
        run_log.queue_text("search_space.yaml", space_yaml_text)
        if dataset is not None:
            run_log.queue_inputs(dataset)
        run_log.outbox.flush()
        return run_log.run_id

    def link_lines(self) -> list[str]:
        """Where to look in the MLflow UI: the sweep's runs table and its parent run."""
        run_log = self._log
        if run_log is None:
            return []
        return link_lines(run_log.tracking_uri, run_log.experiment_id, self.sweep_name, run_log.run_id)

    def _close_unfinished_trials(self, run_log: _RunLogger) -> None:
        """Child runs still RUNNING when the sweep ends were stopped (by the scheduler, or a
        failure that could not report): mark them KILLED so the UI does not show them live."""
        client = run_log.client
        experiment = run_log.require_experiment()
        # every run of the sweep below its parent: trials of both stages and the confirmation stage's run
        for run in client.search_runs(
            [experiment],
            f"tags.`{SWEEP_TAG}` = {_quoted(self.sweep_name, 'sweep name')} and"
            f" tags.`{ROLE_TAG}` != 'sweep' and attributes.status = 'RUNNING'",
            max_results=10000,
        ):
            client.set_tag(
                run.info.run_id, "contavsep.ended", "not finished when the sweep ended (stopped early or failed)"
            )
            client.set_terminated(run.info.run_id, "KILLED")

    def _tag_pareto_trials(self, run_log: _RunLogger, trial_ids: list[str]) -> None:
        """Tag the child runs of Pareto-optimal configurations (``contavsep.pareto = true``)."""
        client = run_log.client
        experiment = run_log.require_experiment()
        for run in client.search_runs(
            [experiment],
            f"tags.`{SWEEP_TAG}` = {_quoted(self.sweep_name, 'sweep name')} and tags.`{ROLE_TAG}` = 'trial'",
            max_results=10000,
        ):
            if run.data.tags.get(TRIAL_TAG) in trial_ids:
                client.set_tag(run.info.run_id, PARETO_TAG, "true")

    def log_node_counts(self, history: Sequence[NodeCount]) -> None:
        """The cluster's node counts while the sweep ran (:class:`ClusterWatch` samples) as the
        parent run's ``cluster/worker_nodes`` and ``cluster/gpus``, stamped when they were seen;
        their step is the second of the sweep. Sent with the run's end (:meth:`finish`)."""
        run_log = self._log
        if run_log is None or not history:
            return
        metrics = [
            Metric(key, float(value), point.time_ms, int(point.at_s))
            for point in history
            for key, value in ((WORKER_NODES_METRIC, point.workers), (GPUS_METRIC, point.gpus))
        ]

        def send() -> None:
            run_id = run_log.require_run()
            for i in range(0, len(metrics), 1000):  # MLflow's limit of metrics per batch
                run_log.client.log_batch(run_id, metrics=metrics[i : i + 1000])

        run_log.outbox.add(_Op("cluster node counts", send))

    def finish(
        self,
        ranking: list[dict],
        ranking_md: str = "",
        pareto_trials: list[str] | None = None,
        *,
        status: str = "FINISHED",
        pending_uri: str | None = None,
        s3: S3Settings | None = None,
    ) -> bool:
        """Log the sweep's ranking (JSON + markdown, and per-method summary metrics: mean, 95 % CI
        bounds and number of runs of each objective), close unfinished child runs (KILLED), end
        the parent run with ``status`` (FINISHED; FAILED when trials errored; KILLED when the
        sweep was stopped, with an empty ranking).

        Never raises because the server is unreachable: waits up to ``flush_timeout_s``, then
        writes what was not sent to ``pending_uri`` (the sweep's storage, see
        :func:`send_pending`) so that ``--resume`` or ``contavsep report`` sends it later.
        Returns whether everything was sent.
        """
        run_log = self._log
        if run_log is None or run_log.run_id is None:
            return True
        payload = {
            "format": PENDING_FORMAT,
            "experiment": self.experiment,
            "sweep": self.sweep_name,
            "experiment_id": run_log.experiment_id,
            "run_id": run_log.run_id,
            "status": status,
            "ranking": ranking,
            "ranking_md": ranking_md,
            "pareto_trials": list(pareto_trials or []),
        }
        _queue_end(self, run_log, payload)
        if run_log.finish_outbox(self.flush_timeout_s, f"sweep {self.sweep_name}"):
            return True
        if pending_uri:
            _write_pending(pending_uri, {**payload, "role": "sweep"}, s3, f"sweep {self.sweep_name}")
        return False


def _queue_end(tracker: SweepTracker, run_log: _RunLogger, payload: Mapping[str, Any]) -> None:
    """Queue the parent run's end from ``payload`` (what :meth:`SweepTracker.finish` writes to a
    pending file); every op is safe to repeat, so a re-send after a partial flush is harmless."""
    ranking = list(payload.get("ranking") or [])
    if ranking:
        run_log.queue_text("ranking.json", json.dumps(ranking, indent=2, default=str))
    if payload.get("ranking_md"):
        run_log.queue_text("ranking.md", str(payload["ranking_md"]))
    summary = summary_metrics(ranking)
    if summary:
        run_log.queue_metrics(summary, 0, "sweep summary metrics")
    pareto = list(payload.get("pareto_trials") or [])
    if pareto:
        run_log.outbox.add(_Op("tagging Pareto trial runs", lambda: tracker._tag_pareto_trials(run_log, pareto)))
    run_log.outbox.add(_Op("closing unfinished trial runs", lambda: tracker._close_unfinished_trials(run_log)))
    run_log.queue_status(str(payload.get("status") or "FINISHED"))


def sweep_link_lines(tracking_uri: str | None, sweep_name: str, parent_run_id: str | None) -> list[str]:
    """The MLflow UI links a command ends with (:func:`mlflow_links.link_lines`): the sweep's runs
    table and its parent run. One short request finds the experiment; without an answer (server
    gone at the end) the lines name the server only."""
    if not tracking_uri:
        return []
    experiment = None
    if parent_run_id:
        try:
            with short_http_requests(5, 0):
                experiment = MlflowClient(tracking_uri).get_run(parent_run_id).info.experiment_id
        except Exception as exc:  # noqa: BLE001 - links are a convenience; the sweep's results stand
            log.info("MLflow: no experiment id for the links (%s)", _one_line(exc))
    return link_lines(tracking_uri, experiment, sweep_name, parent_run_id)
