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

Submodules (each name is what it holds):

- :mod:`~contavsep_platform.tracking.errors`: transient vs permanent MLflow failures, TrackingUnavailableError.
- :mod:`~contavsep_platform.tracking.http_limits`: short HTTP timeouts/retries while a tracker talks to MLflow.
- :mod:`~contavsep_platform.tracking.outbox`: the ordered outbox of MLflow calls and the spool of files to upload.
- :mod:`~contavsep_platform.tracking.tags`: the tags runs carry and quoting a value for a tag filter.
- :mod:`~contavsep_platform.tracking.experiments`: the experiment, found or created, tagged model-training.
- :mod:`~contavsep_platform.tracking.datasets`: the dataset as an MLflow dataset input.
- :mod:`~contavsep_platform.tracking.metrics`: metric names and values (per step, ``final/...``, ``summary/...``).
- :mod:`~contavsep_platform.tracking.run_logger`: what both run trackers share (client, outbox, spool, run id).
- :mod:`~contavsep_platform.tracking.sweep_run`: the sweep's parent run (SweepTracker) and the UI links.
- :mod:`~contavsep_platform.tracking.stage_run`: the nested parent run of a sweep's stage.
- :mod:`~contavsep_platform.tracking.trial_run`: a trial's child run (TrialTracker).
- :mod:`~contavsep_platform.tracking.pending`: pending files (``mlflow-pending.json``): format, name, writing.
- :mod:`~contavsep_platform.tracking.resend`: sending pending files once MLflow is back.
"""

from contavsep_platform.tracking.datasets import dataset_input
from contavsep_platform.tracking.errors import TrackingUnavailableError, is_transient
from contavsep_platform.tracking.experiments import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from contavsep_platform.tracking.http_limits import short_http_requests
from contavsep_platform.tracking.metrics import final_metrics, metric_key, step_values
from contavsep_platform.tracking.pending import PENDING_FILE
from contavsep_platform.tracking.resend import send_all_pending
from contavsep_platform.tracking.stage_run import end_stage_run, open_stage_run
from contavsep_platform.tracking.sweep_run import SweepTracker, sweep_link_lines
from contavsep_platform.tracking.tags import (
    CONFIG_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STAGE_TAG,
    STRATEGY_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
)
from contavsep_platform.tracking.trial_run import SYSTEM_METRICS_INTERVAL_S, TrialTracker

__all__ = [
    "CONFIG_TAG",
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING_KIND",
    "PARENT_TAG",
    "PENDING_FILE",
    "ROLE_TAG",
    "STAGE_TAG",
    "STRATEGY_TAG",
    "SWEEP_TAG",
    "SYSTEM_METRICS_INTERVAL_S",
    "SweepTracker",
    "TRIAL_TAG",
    "TrackingUnavailableError",
    "TrialTracker",
    "dataset_input",
    "end_stage_run",
    "final_metrics",
    "is_transient",
    "metric_key",
    "open_stage_run",
    "send_all_pending",
    "short_http_requests",
    "step_values",
    "sweep_link_lines",
]
