"""A trial's child run (:class:`TrialTracker`): its name, its params, its per-step and final results."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import DatasetInput, Metric, Param

from contavsep.metric_names import DOWNLOADED_METRIC
from contavsep.storage import S3Settings
from contavsep_platform.artifacts import (
    example_dirname,
    r_matrices_json,
    r_matrix_figure,
    safe_name,
    save_figure,
    step_curves_figure,
    write_example,
)
from contavsep_platform.system_metrics import RunSystemMetrics
from contavsep_platform.tracking.experiments import experiment_id
from contavsep_platform.tracking.metrics import final_metrics, metric_key, step_values
from contavsep_platform.tracking.outbox import _Op
from contavsep_platform.tracking.pending import PENDING_FORMAT, _json_default, _write_pending
from contavsep_platform.tracking.run_logger import _RunLogger
from contavsep_platform.tracking.tags import NODE_TAG, PARENT_TAG, ROLE_TAG, STRATEGY_TAG, SWEEP_TAG, TRIAL_TAG, _quoted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from contavsep.engine import Example, StepResult

log = logging.getLogger("contavsep_platform.tracking")

SYSTEM_METRICS_INTERVAL_S = 10.0  # seconds between two samples of a trial's system metrics

# MLflow's REST limits per log_batch call.
_PARAMS_PER_BATCH = 100
_PARAM_VALUE_MAX = 6000


def trial_run_name(params: Mapping[str, str], trial_id: str) -> str:
    """A trial's run name, ``<strategy>-mem<k>-<trial id>`` (e.g. ``contavsep-mem1-41366ad1``): what
    the runs table shows; parts the config lacks are left out. Only a display name: runs are
    found again by their ``contavsep.trial`` tag."""
    parts = [
        params.get("strategy.name", ""),
        f"mem{params['memory.per_class']}" if "memory.per_class" in params else "",
        trial_id,
    ]
    return "-".join(p for p in parts if p)


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested or dotted mappings -> {dotted key: string value} (MLflow params are strings)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + "."))
        else:
            text = str(value)
            out[full] = text if len(text) <= _PARAM_VALUE_MAX else text[: _PARAM_VALUE_MAX - 3] + "..."
    return out


class TrialTracker:
    """The child run of one trial; create it on rank 0 only. ``tracking_uri=None`` no-ops.

    Never raises because the tracking server is unreachable: calls are queued and re-sent.

    Args:
        tracking_uri: MLflow tracking server URI, or None for no tracking.
        experiment: MLflow experiment name, used without a parent (a child run always goes
            into its parent's experiment).
        parent_run_id: the sweep's parent run id (None: a top-level run).
        trial_name: the trial id, stable across restarts (an existing run of this trial under
            the same parent is continued); the run is named :func:`trial_run_name`.
        params: the resolved config, flat (dotted keys) or nested.
        dataset: the trial's dataset as an MLflow input (:func:`dataset_input`), or None.
        system_metrics_interval_s: sample MLflow's system metrics this often while the trial
            runs (:data:`SYSTEM_METRICS_INTERVAL_S` in sweeps); None: none.
        http_timeout_s / max_retries: per-request limits while talking to the server.
        flush_timeout_s: how long :meth:`log_final` / :meth:`close` wait for an unreachable server.
        examples_every_step: log example separations after every step, not only the last.
        pending_uri: where :meth:`log_final` keeps the final results if MLflow stays
            unreachable (``<trial folder>/mlflow-pending.json``; :func:`send_pending`).
        s3: storage settings for ``pending_uri``.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment: str,
        parent_run_id: str | None,
        trial_name: str,
        params: dict[str, object],
        *,
        http_timeout_s: int = 5,
        max_retries: int = 1,
        flush_timeout_s: float = 60.0,
        examples_every_step: bool = False,
        pending_uri: str | None = None,
        s3: S3Settings | None = None,
        dataset: DatasetInput | None = None,
        system_metrics_interval_s: float | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        self.experiment = experiment
        self.tags = dict(tags or {})
        self.pending_uri = pending_uri
        self.s3 = s3
        self.parent_run_id = parent_run_id
        self.trial_name = trial_name
        self.params = _flatten(params)
        self.flush_timeout_s = flush_timeout_s
        self.examples_every_step = examples_every_step
        _quoted(trial_name, "trial name")
        self._log = (
            _RunLogger(tracking_uri, http_timeout_s, max_retries, f"contavsep-mlflow-{safe_name(trial_name)}-")
            if tracking_uri
            else None
        )
        self._run_start_ms: int | None = None
        self._system: RunSystemMetrics | None = None
        if self._log is not None:
            self._log.outbox.add(_Op(f"run of trial {trial_name}", self._open))
            if dataset is not None:
                self._log.queue_inputs(dataset)
            self._log.outbox.flush()
            if system_metrics_interval_s:
                self._system = RunSystemMetrics(
                    self._queue_system_metrics, self._log.tracking_uri, system_metrics_interval_s
                )
                self._system.start()

    @property
    def enabled(self) -> bool:
        return self._log is not None

    @property
    def run_id(self) -> str | None:
        return self._log.run_id if self._log else None

    @property
    def pending(self) -> int:
        """Items waiting for the server (0 when everything was sent)."""
        return len(self._log.outbox.pending) if self._log else 0

    def ui_url(self) -> str | None:
        return self._log.ui_url() if self._log else None

    def _open(self) -> None:
        """Find this trial's run (restart) or create it; log the params. Safe to repeat."""
        run_log = self._log
        assert run_log is not None
        client = run_log.client
        logged: dict[str, str] = {}
        if run_log.run_id is None:
            # Nested runs only show under their parent in the parent's experiment.
            parent = client.get_run(self.parent_run_id) if self.parent_run_id else None
            run_log.experiment_id = parent.info.experiment_id if parent else experiment_id(client, self.experiment)
            filters = [f"tags.`{TRIAL_TAG}` = {_quoted(self.trial_name, 'trial name')}", f"tags.`{ROLE_TAG}` = 'trial'"]
            if self.parent_run_id:
                filters.append(f"tags.`{PARENT_TAG}` = {_quoted(self.parent_run_id, 'parent run id')}")
            found = client.search_runs(
                [run_log.experiment_id], " and ".join(filters), max_results=1, order_by=["attributes.start_time DESC"]
            )
            if found:
                run = found[0]
                if run.info.status != "RUNNING":
                    client.update_run(run.info.run_id, status="RUNNING")
                log.info("MLflow: continuing run %s of trial %s", run.info.run_id, self.trial_name)
            else:
                tags = {**self.tags, ROLE_TAG: "trial", TRIAL_TAG: self.trial_name}
                if parent is not None:
                    tags[PARENT_TAG] = parent.info.run_id
                    if SWEEP_TAG in parent.data.tags:  # the sweep's runs table filters on it (mlflow_links)
                        tags[SWEEP_TAG] = parent.data.tags[SWEEP_TAG]
                if "strategy.name" in self.params:
                    tags[STRATEGY_TAG] = self.params["strategy.name"]
                run = client.create_run(
                    run_log.experiment_id, run_name=trial_run_name(self.params, self.trial_name), tags=tags
                )
            run_log.run_id = run.info.run_id
            self._run_start_ms = run.info.start_time
            log.info("MLflow run of trial %s: %s", self.trial_name, run_log.ui_url() or run_log.run_id)
            logged = dict(run.data.params)
        else:
            logged = dict(client.get_run(run_log.run_id).data.params)
        changed = sorted(k for k, v in self.params.items() if k in logged and logged[k] != v)
        if changed:
            log.warning(
                "MLflow run %s keeps its first values of params %s (MLflow params cannot change)",
                run_log.run_id,
                ", ".join(changed),
            )
        todo = [Param(k, v) for k, v in self.params.items() if k not in logged]
        for i in range(0, len(todo), _PARAMS_PER_BATCH):
            client.log_batch(run_log.run_id, params=todo[i : i + _PARAMS_PER_BATCH])

    def _queue_system_metrics(self, values: dict[str, float]) -> None:
        """Queue and send one point of system metrics (called from the sampling thread).

        Its step is the whole seconds since the run started, so the points of a restarted trial
        continue the run's series instead of starting again at 0."""
        run_log = self._log
        assert run_log is not None
        stamp_ms = int(time.time() * 1000)

        def send() -> None:
            run_id = run_log.require_run()
            step = max(0, (stamp_ms - (self._run_start_ms or stamp_ms)) // 1000)
            client = run_log.client
            client.log_batch(
                run_id, metrics=[Metric(metric_key(k), float(v), stamp_ms, step) for k, v in values.items()]
            )

        run_log.outbox.add(_Op("system metrics", send))
        run_log.outbox.flush()

    def _stop_system_metrics(self) -> None:
        if self._system is not None:
            self._system.stop()
            self._system = None

    def log_placement(self, node: str, *, downloaded: bool) -> None:
        """Where this attempt of the trial runs: the node (tag, the latest attempt's) and whether
        it had to download the dataset into that node's cache (``data/downloaded``, 1 or 0, one
        point per attempt: a restart on another node shows as a second point)."""
        run_log = self._log
        if run_log is None:
            return
        stamp_ms = int(time.time() * 1000)

        def send() -> None:
            run_id = run_log.require_run()
            step = max(0, (stamp_ms - (self._run_start_ms or stamp_ms)) // 1000)
            run_log.client.set_tag(run_id, NODE_TAG, node)
            run_log.client.log_batch(run_id, metrics=[Metric(DOWNLOADED_METRIC, float(downloaded), stamp_ms, step)])

        run_log.outbox.add(_Op("placement", send))
        run_log.outbox.flush()

    def _queue_examples(self, examples: list[Example], step: int) -> None:
        assert self._log is not None
        base = "examples" if not self.examples_every_step else f"examples/step={step}"
        for index, example in enumerate(examples):
            self._log.queue_files(
                partial(write_example, example),
                f"{base}/{example_dirname(index, example)}",
                f"example {index} of step {step}",
            )

    def log_step(self, result: StepResult) -> None:
        """Metrics of one incremental step with ``step=result.step`` (and examples at the last)."""
        if self._log is None:
            return
        self._log.queue_metrics(step_values(result), result.step, f"metrics of step {result.step}")
        if result.examples and (result.is_last or self.examples_every_step):
            self._queue_examples(result.examples, result.step)
        self._log.outbox.flush()

    def log_final(self, summary: dict, config_yaml: str) -> None:
        """Final metrics, R matrices (JSON + heatmap), per-step curves, the resolved config;
        then the run ends FINISHED. Waits up to ``flush_timeout_s`` for an unreachable server,
        then keeps the summary and config in ``pending_uri`` to be sent later."""
        if self._log is None:
            return
        run_log = self._log
        self._stop_system_metrics()  # its last point goes before the run ends
        _queue_trial_final(run_log, summary, config_yaml)
        if (
            run_log.finish_outbox(self.flush_timeout_s, f"trial {self.trial_name}")
            or not self.pending_uri
            or run_log.run_id is None
        ):
            return
        payload = {
            "format": PENDING_FORMAT,
            "role": "trial",
            "trial": self.trial_name,
            "experiment_id": run_log.experiment_id,
            "run_id": run_log.run_id,
            "summary": summary,
            "config_yaml": config_yaml,
        }
        _write_pending(self.pending_uri, payload, self.s3, f"trial {self.trial_name}")

    def close(self, status: str = "FAILED") -> None:
        """End the run without final results (``FAILED`` or ``KILLED``), sending what is queued."""
        if self._log is None:
            return
        if status not in ("FAILED", "KILLED", "FINISHED"):
            raise ValueError(f"status must be FAILED, KILLED or FINISHED, got {status!r}")
        self._stop_system_metrics()
        self._log.queue_status(status)
        self._log.finish_outbox(self.flush_timeout_s, f"trial {self.trial_name}")


def _save_plot(
    draw: Callable[[Mapping[str, Any]], Figure], summary: Mapping[str, Any], name: str, directory: Path
) -> Path:
    """Draw ``summary`` with ``draw`` and save the figure as ``directory / name``."""
    return save_figure(draw(summary), directory / name)


def _queue_trial_final(run_log: _RunLogger, summary: Mapping[str, Any], config_yaml: str) -> None:
    """Queue a trial run's end (what :meth:`TrialTracker.log_final` sends; repeatable)."""
    if summary:
        run_log.queue_metrics(final_metrics(summary), int(summary.get("last_step", 0)), "final metrics")
        run_log.queue_text("R.json", r_matrices_json(summary), "results")
        run_log.queue_text("summary.json", json.dumps(summary, indent=2, default=_json_default), "results")
        for name, draw in (("R_matrices.png", r_matrix_figure), ("step_curves.png", step_curves_figure)):
            run_log.queue_files(partial(_save_plot, draw, summary, name), "plots", f"plot {name}")
    run_log.queue_text("config.yaml", config_yaml)
    run_log.queue_tags({"contavsep.complete": "true"}, "completion tag")
    run_log.queue_status("FINISHED")
