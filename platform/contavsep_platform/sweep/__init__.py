"""A sweep: Ray Tune + Optuna over strategies and their hyperparameters, one trial per task sequence.

``run_sweep`` takes a validated :class:`~contavsep_platform.spaces.SearchSpace` and:

1. attaches to Ray (``ray_address``, or the job's cluster inside ``ray job submit``) or starts a
   local Ray in this process, with the service settings in the job's runtime env so every
   trial finds S3 and MLflow the way this process does;
2. checks the dataset and the sweep folder ``<storage>/sweeps/<name>/`` (a new sweep must not
   exist, ``resume`` needs it) before any trial starts;
3. checks that one trial fits the cluster, then (only then: a refused sweep leaves no run)
   opens the sweep's MLflow parent run (re-used on resume, after sending what an MLflow
   outage kept from the previous session's final flush) and hands its id to the trials;
4. runs a Tuner: :class:`~contavsep_platform.search.GroupedOptunaSearch` proposes configurations
   from the define-by-run space and runs each once per repeat, ASHA on group means
   (:mod:`contavsep_platform.pruning`) stops weak configurations at step boundaries from step 2
   on (``step`` is its time attribute), the driver of a
   trial holds ``resources.driver_cpus`` and ``max_concurrent_trials`` comes from the cluster's
   resources, so a small machine never deadlocks on drivers waiting for workers;
   ``resume`` restores it (``Tuner.restore``): finished trials are not run again; the Optuna
   study is kept in the sweep's folder (``optuna-journal.log``, :mod:`contavsep_platform.study`)
   and ``resume`` continues it;
5. on Ctrl-C or SIGTERM (``ray job stop``, within the grace period of :data:`JOB_STOP_GRACE_ENV`)
   stops the trials, removes what is left of their placement groups, ends the MLflow runs
   KILLED and says how to resume;
6. returns every trial's last result (an errored trial with its error and Tune's ``error.txt``)
   and the ranking of the configurations (mean ± 95 % CI over their repeats, paired
   differences; :mod:`contavsep_platform.comparison`), which also goes to the parent run (ended
   FINISHED, or FAILED when a trial errored; what MLflow does not take in time is kept in
   ``<sweep>/mlflow-pending.json``), followed by the report and its views (``report/``,
   :func:`~contavsep_platform.report.log_report`).

While it runs, the console shows the trials (:mod:`contavsep_platform.live_table`) and Ray's and
Tune's own output goes to the sweep's log file (:mod:`contavsep_platform.sweep_log`), unless
``verbose`` asks for Tune's output.

Submodules (each imports only from those above it):

- :mod:`~contavsep_platform.sweep.error`: SweepError, a sweep that cannot start or continue as asked.
- :mod:`~contavsep_platform.sweep.tune_factories`: the Optuna searcher and the Tune scheduler of a space.
- :mod:`~contavsep_platform.sweep.ray_cluster`: the Ray connection, placement groups, SIGTERM, cluster capacity.
- :mod:`~contavsep_platform.sweep.outcome`: TrialRow, SweepOutcome, the comparison and the parent run's rows.
- :mod:`~contavsep_platform.sweep.tables`: the outcome as console and markdown tables, the final console.
- :mod:`~contavsep_platform.sweep.names`: a sweep's name (default, checked) and its trials' names and folders.
- :mod:`~contavsep_platform.sweep.resume`: the space record and the check of a ``--resume``.
- :mod:`~contavsep_platform.sweep.console`: Ray's and Tune's output to the log file, a restored Tuner's console.
- :mod:`~contavsep_platform.sweep.confirm`: the confirmation stage (the stored choice, its Tune experiment).
- :mod:`~contavsep_platform.sweep.run`: ``run_sweep``: the search's Tune experiment, its outcome, the parent run.
"""

# `ray job stop`'s grace period: settings.JOB_STOP_GRACE_ENV (the head and every job carry it).
from contavsep_platform.settings import JOB_STOP_GRACE_ENV  # re-exported on purpose (README, tests)
from contavsep_platform.sweep.confirm import CONFIRM_DIR, CONFIRMATION_FILE, confirmation_plan, confirmation_trials
from contavsep_platform.sweep.error import SweepError
from contavsep_platform.sweep.names import _trial_dirname, _trial_name, check_sweep_name
from contavsep_platform.sweep.outcome import SweepOutcome, TrialRow, comparison_of
from contavsep_platform.sweep.ray_cluster import PlacementGroupReaper, connect_ray, job_placement_groups
from contavsep_platform.sweep.resume import SPACE_RECORD, space_record
from contavsep_platform.sweep.run import run_sweep
from contavsep_platform.sweep.tables import (
    error_lines,
    format_ranking,
    format_trials_table,
    print_outcome,
    ranking_markdown,
)
from contavsep_platform.sweep.tune_factories import make_scheduler, make_searcher

__all__ = [
    "CONFIRMATION_FILE",
    "CONFIRM_DIR",
    "JOB_STOP_GRACE_ENV",
    "SPACE_RECORD",
    "SweepError",
    "SweepOutcome",
    "TrialRow",
    "check_sweep_name",
    "comparison_of",
    "confirmation_plan",
    "confirmation_trials",
    "connect_ray",
    "error_lines",
    "format_ranking",
    "format_trials_table",
    "job_placement_groups",
    "make_scheduler",
    "make_searcher",
    "print_outcome",
    "ranking_markdown",
    "run_sweep",
    "space_record",
    # Where a sweep started before the split (issue 21) pickled them: Tune's tuner.pkl names
    # its trial-name functions and callbacks by module, and --resume loads it through these.
    "PlacementGroupReaper",
    "_trial_dirname",
    "_trial_name",
]
