"""MLflow tracking: one parent run per sweep, one nested child run per trial.

What lands in MLflow (names are the report's and the UI's vocabulary):

- the experiment is tagged as a model-training one (``mlflow.experimentKind =
  custom_model_development``), when created and when a sweep reuses it.
- parent run (:class:`SweepTracker`), named after the sweep: tags ``contavsep.sweep``,
  ``contavsep.role=sweep`` and the caller's (data manifest hash, git commit, ...); the dataset
  as an MLflow dataset input (:func:`dataset_input`); artifacts ``search_space.yaml`` and, at the
  end, ``ranking.json`` / ``ranking.md`` (means with 95 % CIs, paired differences) and the
  per-method summary metrics ``summary/<strategy>_mem<k>/<metric>_{mean,ci_low,ci_high,n}``.
- child run per trial (:class:`TrialTracker`), named ``<strategy>-mem<k>-<trial id>``
  (:func:`trial_run_name`), tags ``mlflow.parentRunId``, ``contavsep.role=trial``,
  ``contavsep.trial``, ``contavsep.strategy`` and the parent's ``contavsep.sweep``; the same
  dataset input; MLflow's system metrics (``system/...``: CPU, memory, disk, network, GPU where
  one exists; :mod:`contavsep_platform.system_metrics`) every 10 s while the trial runs;
  params = the flattened dotted config (its strategy's keys alone); metrics with ``step=k``
  after every incremental step, named as Tune gets them (:mod:`contavsep.metric_names`:
  ``sdr``, ``sdr_old``, ``sdr_new``, ``sir``, ``sar``, ``task_sdr/<j>``, ``loss/<term>``, ...,
  ``forgetting/<m>``, ``bwt/<m>``, ``average_incremental/<m>`` as of that step, ``val/...``);
  final metrics ``final/<name>``
  (``final/sdr``, ``final/forgetting_sdr``, ``final/bwt_sdr``, ``final/avg_incremental_sdr``,
  ...); artifacts ``config.yaml``, ``results/R.json``, ``results/summary.json``,
  ``plots/R_matrices.png``, ``plots/step_curves.png`` and ``examples/<k>_<classes>/`` (WAVs and
  a spectrogram PNG of a few test separations of the last step).

Runs are found again by tag, not by display name: a restarted trial (same trial id under the
same parent) or a resumed sweep (same sweep name) continues its existing run instead of creating
a second one.

Only :class:`mlflow.MlflowClient` is used, never the fluent ``mlflow.start_run`` API, whose
process-global "active run" would mix up several trials in one process.

A tracking server outage never fails a trial: every call goes through an ordered outbox with
short HTTP timeouts; what fails because the server is unreachable stays queued (artifacts as
local files) and is re-sent, in order, at the next call; ``log_final`` / ``finish`` wait a bounded
time for the server to come back, then keep what is needed to end the run (final metrics,
ranking, status) in the sweep's storage (``mlflow-pending.json``), which :func:`send_all_pending`
sends later (``--resume``, ``contavsep report``). One warning per outage, one when it is over;
urllib3's per-request retry lines are filtered out. Metric points are sent idempotently (a step
already in a run's history is not logged again: retries, Train restarts and resumes re-run
steps). What the server rejects (e.g. a param changed on resume) is dropped with a warning, not
retried forever.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

from contavsep import storage
from contavsep.metric_names import final_name, final_values, summary_values
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
from contavsep_platform.errors import UserError
from contavsep_platform.mlflow_links import link_lines, run_url
from contavsep_platform.system_metrics import RunSystemMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from contavsep.engine import Example, StepResult

log = logging.getLogger("contavsep_platform.tracking")

DEFAULT_EXPERIMENT = "contavsep"
SWEEP_TAG = "contavsep.sweep"
ROLE_TAG = "contavsep.role"  # "sweep" (parent run) | "trial" (child run) | "stage" (the confirmation stage's nested parent)
STAGE_TAG = "contavsep.stage"  # search | confirm: which stage of the sweep a trial (or stage run) belongs to
SELECTION_TAG = "contavsep.selection"  # what the sweep's ranking chose on, in words
CONFIG_TAG = "contavsep.configuration"  # a trial's configuration (group) id: links a confirmation run to the search's
TRIAL_TAG = "contavsep.trial"
STRATEGY_TAG = "contavsep.strategy"
PARETO_TAG = "contavsep.pareto"  # "true" on child runs of configurations on a multi-objective sweep's Pareto front
PARENT_TAG = "mlflow.parentRunId"
# MLflow 3's experiment kind (an experiment tag; values from the UI's ExperimentKind enum):
# "custom_model_development" is the UI's "Machine learning" kind, whose page is the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# Kinds the UI guessed or nobody chose: replaced by ours; a kind a person chose is kept.
_UNCHOSEN_KINDS = frozenset({"", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred"})
DATASET_CONTEXT_TAG = "mlflow.data.context"  # MLflow's input tag for what a dataset was used for
SYSTEM_METRICS_INTERVAL_S = 10.0  # seconds between two samples of a trial's system metrics

# MLflow's REST limits per log_batch call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_PARAM_VALUE_MAX = 6000
# Errors that mean "the request itself is wrong": retrying cannot help, so the item is dropped.
_PERMANENT_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST",
    "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND", "MALFORMED_REQUEST",
})
_METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


class TrackingUnavailableError(UserError):
    """The tracking server cannot be used for a new sweep (unreachable or refusing it)."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means "the server is unreachable or overloaded, try again later"."""
    if isinstance(exc, MlflowException):
        # Connection refused / timeouts / 5xx arrive as INTERNAL_ERROR or TEMPORARILY_UNAVAILABLE.
        return exc.error_code not in _PERMANENT_CODES
    return isinstance(exc, OSError)  # requests' ConnectionError and Timeout are OSErrors


# ---------------------------------------------------------------------------- HTTP limits

_env_lock = threading.Lock()
_env_users = 0
_env_set: dict[str, str] = {}


class _NoRetryLines(logging.Filter):
    """Drops urllib3's "Retrying (Retry(total=...)) after connection broken" warnings: during an
    outage every request would add one; the outbox says once that the server is unreachable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


_no_retry_lines = _NoRetryLines()


@contextmanager
def short_http_requests(timeout_s: int, max_retries: int) -> Iterator[None]:
    """Short MLflow HTTP timeouts/retries (and no URL printing or progress bars) while a tracker talks to the server.

    The MlflowClient reads these from the environment at every request and has no per-client
    setting. They are set only where the user has not set them, and only while at least one
    tracker call is in flight (reference-counted, so threads do not undo each other's).
    """
    global _env_users
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(max_retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        # MlflowClient.set_terminated prints two "View run" lines to stdout (after one more
        # request): they would land in the middle of the sweep's tables. ui_url() gives the link.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        # Artifact downloads (the report reads search_space.yaml) draw a tqdm bar on stderr,
        # which would break a command's one-line error.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    with _env_lock:
        if _env_users == 0:
            for key, value in wanted.items():
                if key not in os.environ:
                    os.environ[key] = value
                    _env_set[key] = value
            logging.getLogger("urllib3.connectionpool").addFilter(_no_retry_lines)
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                for key, value in _env_set.items():
                    if os.environ.get(key) == value:
                        del os.environ[key]
                _env_set.clear()
                logging.getLogger("urllib3.connectionpool").removeFilter(_no_retry_lines)


# ---------------------------------------------------------------------------- outbox


@dataclass
class _Op:
    """One MLflow call to make, in order. ``call`` must be safe to repeat (it is retried whole)."""

    label: str
    call: Callable[[], object]  # what it returns is not used
    cleanup: Callable[[], None] | None = None  # runs once the op is done with (sent or dropped)


class _Outbox:
    """Sends queued MLflow calls in order; stops at the first failure that a retry may fix.

    Thread-safe: a trial's system-metrics thread queues and flushes next to the trial's own calls.
    """

    def __init__(self, tracking_uri: str, http_timeout_s: int, max_retries: int):
        self.tracking_uri = tracking_uri
        self.http_timeout_s = http_timeout_s
        self.max_retries = max_retries
        self.pending: deque[_Op] = deque()
        self.down_since: float | None = None
        self.dropped: list[str] = []
        self._lock = threading.RLock()

    def add(self, op: _Op) -> None:
        with self._lock:
            self.pending.append(op)

    def flush(self) -> bool:
        """Send what is queued; True when nothing is left."""
        with self._lock:
            return self._flush()

    def _flush(self) -> bool:
        sent = 0
        while self.pending:
            op = self.pending[0]
            try:
                with short_http_requests(self.http_timeout_s, self.max_retries):
                    op.call()
                sent += 1
            except Exception as exc:  # noqa: BLE001 - a tracking problem must never end a trial
                if is_transient(exc):
                    if self.down_since is None:
                        self.down_since = time.monotonic()
                        log.warning(
                            "MLflow at %s is unreachable (%s); keeping %d item(s) to send later",
                            self.tracking_uri, _one_line(exc), len(self.pending),
                        )
                    else:
                        log.debug("MLflow at %s still unreachable: %s", self.tracking_uri, _one_line(exc))
                    return False
                log.warning("MLflow at %s refused %s, dropped: %s", self.tracking_uri, op.label, _one_line(exc))
                self.dropped.append(op.label)
            self.pending.popleft()
            if op.cleanup is not None:
                op.cleanup()
        if self.down_since is not None:
            log.warning(
                "MLflow at %s is reachable again after %.0f s; sent %d buffered item(s)",
                self.tracking_uri, time.monotonic() - self.down_since, sent,
            )
            self.down_since = None
        return True

    def drain(self, timeout_s: float) -> bool:
        """Flush, retrying for up to ``timeout_s`` while the server is unreachable."""
        deadline = time.monotonic() + timeout_s
        pause = 0.5
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)
        return True


# ---------------------------------------------------------------------------- MLflow helpers


def _quoted(value: str, what: str) -> str:
    """``value`` as a search-filter string literal; MLflow filters have no quote escaping."""
    if "'" in value or "\\" in value:
        raise UserError(f"{what} '{value}' must not contain quotes or backslashes")
    return f"'{value}'"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing (concurrent creators agree), tagged as a
    model-training experiment (:data:`EXPERIMENT_KIND_TAG`) so the UI opens it on its runs table."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise MlflowException(
            f"MLflow experiment '{name}' is deleted; restore it (`mlflow experiments restore`) or use another experiment name",
            error_code=INVALID_STATE,
        )
    if exp.tags.get(EXPERIMENT_KIND_TAG, "") in _UNCHOSEN_KINDS:  # an experiment from before, or made elsewhere
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp.experiment_id


def trial_run_name(params: Mapping[str, str], trial_id: str) -> str:
    """A trial's run name, ``<strategy>-mem<k>-<trial id>`` (e.g. ``contavsep-mem1-41366ad1``): what
    the runs table shows; parts the config lacks are left out. Only a display name: runs are
    found again by their ``contavsep.trial`` tag."""
    parts = [params.get("strategy.name", ""), f"mem{params['memory.per_class']}" if "memory.per_class" in params else "", trial_id]
    return "-".join(p for p in parts if p)


def dataset_input(uri: str, manifest: Mapping[str, Any]) -> DatasetInput:
    """The dataset at ``uri`` as an MLflow dataset input (the runs table's Dataset column).

    name = the dataset folder's name; digest = the manifest's content hash cut to 12 hex digits
    (MLflow stores at most 36 and the runs table prints it next to the name; the full hash is in
    the profile and an input tag); source = the normalised storage URI (storage URIs hold no
    credentials: keys live in their 0600 file); profile = classes and clip counts; input tags =
    the context ("train"), the full content hash and each feature extractor's name@revision.
    """
    normalised = str(storage.parse_uri(uri))
    full_hash = str(manifest.get("content_hash", ""))
    profile = {
        "content_hash": full_hash,
        "classes": len(manifest.get("classes") or []),
        "clips": manifest.get("totals") or {},
        "sample_rate": (manifest.get("audio") or {}).get("sample_rate"),
    }
    dataset = Dataset(
        name=normalised.rstrip("/").rsplit("/", 1)[-1] or normalised,
        digest=full_hash[:12] or "unknown",
        source_type="s3" if normalised.startswith("s3://") else "local",
        source=json.dumps({"uri": normalised}),
        profile=json.dumps(profile),
    )
    tags = {DATASET_CONTEXT_TAG: "train", "contavsep.content_hash": full_hash}
    for role, extractor in sorted((manifest.get("extractors") or {}).items()):
        if isinstance(extractor, Mapping):
            revision = extractor.get("commit") or extractor.get("revision")
            tags[f"contavsep.extractor.{role}"] = f"{extractor.get('name', '?')}" + (f"@{revision}" if revision else "")
    return DatasetInput(dataset, [InputTag(k, str(v)[:500]) for k, v in tags.items()])


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


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in metric names replaced by '_'."""
    return _METRIC_KEY_UNSAFE.sub("_", name)


def _as_metric_value(value: Any) -> float | None:
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def step_values(result: StepResult) -> dict[str, float]:
    """The MLflow metrics of one step: every value Tune gets with it
    (:func:`contavsep_platform.trial.tune_metrics`), under the same names, less Tune's counters."""
    values: dict[str, float] = {}
    for key, value in result.metrics.items():
        number = _as_metric_value(value)
        if number is not None and key != "step":  # the step is the x axis, not a metric
            values[key] = number
    values.update(summary_values(result.summary or {}))
    return values


def final_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The ``final/...`` MLflow metrics of a finished trial, from its results summary: every
    value of :func:`contavsep.metric_names.final_values` under its final name
    (:func:`contavsep.metric_names.final_name`: ``final/sdr``, ``final/forgetting_sdr``,
    ``final/val/sdr``, ...). Undefined values are left out."""
    return {final_name(k): v for k, v in final_values(summary).items()}


def _metrics_batches(values: Mapping[str, float], step: int, timestamp_ms: int) -> list[list[Metric]]:
    metrics = [Metric(metric_key(k), float(v), timestamp_ms, int(step)) for k, v in values.items()]
    return [metrics[i : i + _METRICS_PER_BATCH] for i in range(0, len(metrics), _METRICS_PER_BATCH)]


class _Spool:
    """Local files waiting to be uploaded as artifacts (they must outlive an outage)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.root: Path | None = None
        self._count = 0

    def new_dir(self) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        self._count += 1
        path = self.root / f"{self._count:04d}"
        path.mkdir()
        return path

    def remove_if_empty(self) -> None:
        if self.root is not None and self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()
            self.root = None


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
        self.outbox.add(_Op(f"dataset input {dataset.dataset.name}",
                            lambda: self.client.log_inputs(self.require_run(), datasets=[dataset])))

    def queue_status(self, status: str) -> None:
        self.outbox.add(_Op(f"run status {status}", lambda: self.client.set_terminated(self.require_run(), status)))

    def finish_outbox(self, timeout_s: float, what: str) -> bool:
        ok = self.outbox.drain(timeout_s)
        if not ok:
            labels = [op.label for op in self.outbox.pending]
            log.warning(
                "MLflow at %s stayed unreachable for %.0f s at the end of %s: %d item(s) not logged (%s)%s",
                self.tracking_uri, timeout_s, what, len(labels), ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else ""),
                f"; local copies of artifacts stay in {self.spool.root}" if self.spool.root else "",
            )
        else:
            self.spool.remove_if_empty()
        return ok

    def ui_url(self) -> str | None:
        if self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.tracking_uri, self.experiment_id, self.run_id)


# ---------------------------------------------------------------------------- the sweep (parent)


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
                        message = (f"MLflow at {run_log.tracking_uri} is unreachable ({_one_line(exc)}); start the local"
                                   " services (`contavsep services up`) or set MLFLOW_TRACKING_URI")
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
            [experiment], f"tags.`{SWEEP_TAG}` = {_quoted(self.sweep_name, 'sweep name')} and"
            f" tags.`{ROLE_TAG}` != 'sweep' and attributes.status = 'RUNNING'", max_results=10000
        ):
            client.set_tag(run.info.run_id, "contavsep.ended", "not finished when the sweep ended (stopped early or failed)")
            client.set_terminated(run.info.run_id, "KILLED")

    def _tag_pareto_trials(self, run_log: _RunLogger, trial_ids: list[str]) -> None:
        """Tag the child runs of Pareto-optimal configurations (``contavsep.pareto = true``)."""
        client = run_log.client
        experiment = run_log.require_experiment()
        for run in client.search_runs([experiment], f"tags.`{SWEEP_TAG}` = {_quoted(self.sweep_name, 'sweep name')}"
                                      f" and tags.`{ROLE_TAG}` = 'trial'", max_results=10000):
            if run.data.tags.get(TRIAL_TAG) in trial_ids:
                client.set_tag(run.info.run_id, PARETO_TAG, "true")

    def finish(self, ranking: list[dict], ranking_md: str = "", pareto_trials: list[str] | None = None, *,
               status: str = "FINISHED", pending_uri: str | None = None, s3: S3Settings | None = None) -> bool:
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
            "format": PENDING_FORMAT, "experiment": self.experiment, "sweep": self.sweep_name,
            "experiment_id": run_log.experiment_id, "run_id": run_log.run_id, "status": status,
            "ranking": ranking, "ranking_md": ranking_md, "pareto_trials": list(pareto_trials or []),
        }
        _queue_end(self, run_log, payload)
        if run_log.finish_outbox(self.flush_timeout_s, f"sweep {self.sweep_name}"):
            return True
        if pending_uri:
            _write_pending(pending_uri, {**payload, "role": "sweep"}, s3, f"sweep {self.sweep_name}")
        return False


PENDING_FORMAT = 1
PENDING_FILE = "mlflow-pending.json"  # under <storage>/sweeps/<name>/: a final flush MLflow did not get


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


def open_stage_run(tracking_uri: str, parent_run_id: str, sweep_name: str, stage: str, description: str) -> str | None:
    """The nested parent run of a sweep's stage (``confirm``): created once, re-opened (RUNNING)
    on ``--resume``; its trials' runs nest under it. Returns its id, or None (with a warning)
    when MLflow does not answer: an outage never stops a sweep, and the stage's trials then
    nest under the sweep's run (tagged with their stage all the same)."""
    try:
        return _open_stage_run(tracking_uri, parent_run_id, sweep_name, stage, description)
    except Exception as exc:  # noqa: BLE001 - any failure of the server: the sweep goes on without the stage run
        log.warning("MLflow at %s did not open the %s stage's run (%s); its trials' runs go under the sweep's run",
                    tracking_uri, stage, _one_line(exc))
        return None


def _open_stage_run(tracking_uri: str, parent_run_id: str, sweep_name: str, stage: str, description: str) -> str:
    client = MlflowClient(tracking_uri)
    with short_http_requests(5, 1):
        parent = client.get_run(parent_run_id)
        found = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}' and"
                                   f" tags.`{ROLE_TAG}` = 'stage' and tags.`{STAGE_TAG}` = {_quoted(stage, 'stage')}", max_results=1)
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {PARENT_TAG: parent_run_id, SWEEP_TAG: sweep_name, ROLE_TAG: "stage", STAGE_TAG: stage,
                SELECTION_TAG: description, "mlflow.note.content": f"{stage} stage of sweep {sweep_name}: {description}"}
        return client.create_run(parent.info.experiment_id, run_name=f"{sweep_name}-{stage}", tags=tags).info.run_id


def end_stage_run(tracking_uri: str, run_id: str, status: str) -> None:
    """End a stage run (FINISHED, FAILED or KILLED); when MLflow does not answer, the sweep's
    end closes it (KILLED) with the other runs left RUNNING, or a --resume ends it."""
    try:
        with short_http_requests(5, 1):
            MlflowClient(tracking_uri).set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001 - an outage never fails a sweep that ran
        log.warning("MLflow at %s did not end the stage run %s (%s)", tracking_uri, run_id, _one_line(exc))


def summary_metrics(ranking: list[dict]) -> dict[str, float]:
    """``summary/<strategy>_mem<k>[_<factor value>...]/<metric>_{mean,ci_low,ci_high,n}`` of every
    ranked method (``chosen_on_*``: the validation value its configuration was chosen on)."""
    out: dict[str, float] = {}
    for row in ranking:
        factors = "".join(f"_{metric_key(str(v))}" for v in (row.get("factors") or {}).values())
        prefix = f"summary/{row['strategy']}_mem{row['memory']}{factors}"
        for metric, value in row.items():
            if isinstance(value, Mapping) and "ci95" in value and "other" not in value:
                name = metric_key(metric).replace("/", "_")
                for suffix, v in (("mean", value["mean"]), ("ci_low", value["ci95"][0]), ("ci_high", value["ci95"][1]), ("n", value["n"])):
                    if v is not None and math.isfinite(float(v)):
                        out[f"{prefix}/{name}_{suffix}"] = float(v)
    return out


# ---------------------------------------------------------------------------- a trial (child)


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
            _RunLogger(tracking_uri, http_timeout_s, max_retries, f"contavsep-mlflow-{safe_name(trial_name)}-") if tracking_uri else None
        )
        self._run_start_ms: int | None = None
        self._system: RunSystemMetrics | None = None
        if self._log is not None:
            self._log.outbox.add(_Op(f"run of trial {trial_name}", self._open))
            if dataset is not None:
                self._log.queue_inputs(dataset)
            self._log.outbox.flush()
            if system_metrics_interval_s:
                self._system = RunSystemMetrics(self._queue_system_metrics, self._log.tracking_uri, system_metrics_interval_s)
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
            found = client.search_runs([run_log.experiment_id], " and ".join(filters), max_results=1,
                                       order_by=["attributes.start_time DESC"])
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
                run = client.create_run(run_log.experiment_id, run_name=trial_run_name(self.params, self.trial_name), tags=tags)
            run_log.run_id = run.info.run_id
            self._run_start_ms = run.info.start_time
            log.info("MLflow run of trial %s: %s", self.trial_name, run_log.ui_url() or run_log.run_id)
            logged = dict(run.data.params)
        else:
            logged = dict(client.get_run(run_log.run_id).data.params)
        changed = sorted(k for k, v in self.params.items() if k in logged and logged[k] != v)
        if changed:
            log.warning("MLflow run %s keeps its first values of params %s (MLflow params cannot change)",
                        run_log.run_id, ", ".join(changed))
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
            client.log_batch(run_id, metrics=[Metric(metric_key(k), float(v), stamp_ms, step) for k, v in values.items()])

        run_log.outbox.add(_Op("system metrics", send))
        run_log.outbox.flush()

    def _stop_system_metrics(self) -> None:
        if self._system is not None:
            self._system.stop()
            self._system = None

    def _queue_examples(self, examples: list[Example], step: int) -> None:
        assert self._log is not None
        base = "examples" if not self.examples_every_step else f"examples/step={step}"
        for index, example in enumerate(examples):
            self._log.queue_files(partial(write_example, example), f"{base}/{example_dirname(index, example)}",
                                  f"example {index} of step {step}")

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
        if run_log.finish_outbox(self.flush_timeout_s, f"trial {self.trial_name}") or not self.pending_uri or run_log.run_id is None:
            return
        payload = {"format": PENDING_FORMAT, "role": "trial", "trial": self.trial_name, "experiment_id": run_log.experiment_id,
                   "run_id": run_log.run_id, "summary": summary, "config_yaml": config_yaml}
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


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def _save_plot(draw: Callable[[Mapping[str, Any]], Figure], summary: Mapping[str, Any], name: str,
               directory: Path) -> Path:
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


def _write_pending(uri: str, payload: Mapping[str, Any], s3: S3Settings | None, what: str) -> None:
    try:
        storage.write_bytes_atomic(uri, json.dumps(payload, indent=1, default=_json_default).encode(), s3)
        log.warning("MLflow: kept the final results of %s in %s; `contavsep report --sweep SWEEP` or `contavsep sweep ... --resume`"
                    " sends them once MLflow is back", what, uri)
    except Exception as exc:  # noqa: BLE001 - storage down too: say so, the results stand in Tune and the checkpoints
        log.warning("MLflow: could not keep the final results of %s in %s either: %s", what, uri, _one_line(exc))


def send_pending(tracking_uri: str, pending_uri: str, s3: S3Settings | None = None, timeout_s: float = 30.0) -> bool | None:
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


def send_all_pending(tracking_uri: str, sweep_uri: str, s3: S3Settings | None = None, timeout_s: float = 30.0) -> tuple[int, int]:
    """Send every pending final flush of the sweep at ``sweep_uri`` (its own and its trials');
    returns (sent, still pending)."""
    sent = left = 0
    for rel in storage.list_dir(sweep_uri, s3, recursive=True):
        if rel == PENDING_FILE or rel.endswith("/" + PENDING_FILE) and rel.count("/") == 1:
            ok = send_pending(tracking_uri, storage.join(sweep_uri, rel), s3, timeout_s)
            sent += ok is True
            left += ok is False
    return sent, left


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
