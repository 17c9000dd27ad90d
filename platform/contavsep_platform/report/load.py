"""Reading a sweep from MLflow: its parent run, its search space and its trials, and per-step histories."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from contavsep.suggest import did_you_mean
from contavsep_platform.errors import UserError
from contavsep_platform.report.records import SweepRecord, TrialRecord, own_params
from contavsep_platform.tracking import PARENT_TAG, ROLE_TAG, SWEEP_TAG, TRIAL_TAG, is_transient, short_http_requests

SPACE_ARTIFACT = "search_space.yaml"


class SweepNotFoundError(UserError):
    """No parent run of that sweep name in MLflow."""


@contextmanager
def _talking_to(tracking_uri: str) -> Iterator[None]:
    """Short timeouts; an unreachable server becomes one clear error."""
    try:
        with short_http_requests(10, 1):
            yield
    except MlflowException as exc:
        if is_transient(exc):
            raise UserError(
                f"MLflow at {tracking_uri} is unreachable ({' '.join(str(exc).split())[:200]}); start the local services"
                " (`contavsep services up`) or set MLFLOW_TRACKING_URI"
            ) from None
        raise


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    runs: list = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string, max_results=1000, page_token=token, order_by=["attributes.start_time ASC"]
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def sweep_names(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    """Names of all sweeps (parent runs) in the experiments."""
    runs = _search_all(client, experiment_ids, f"tags.`{ROLE_TAG}` = 'sweep'")
    return sorted({r.data.tags.get(SWEEP_TAG, "") for r in runs} - {""})


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    """A run's text artifact, or "" when the run has none of that name."""
    folder = path.rpartition("/")[0]
    if path not in {a.path for a in client.list_artifacts(run_id, folder or None)}:
        return ""
    with tempfile.TemporaryDirectory(prefix="contavsep-report-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def load_sweep(tracking_uri: str, sweep_name: str, experiment: str | None = None) -> SweepRecord:
    """The sweep's parent run (and its search space) and all its trials (child runs), read
    through MlflowClient.

    ``experiment``: restrict to this experiment name; default: look in all active experiments.
    Raises :class:`SweepNotFoundError` (naming the closest sweep) or :class:`UserError`.
    """
    if "'" in sweep_name or "\\" in sweep_name:
        raise UserError(f"sweep name '{sweep_name}' must not contain quotes or backslashes")
    client = MlflowClient(tracking_uri)
    with _talking_to(tracking_uri):
        if experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise UserError(f"MLflow at {tracking_uri} has no experiment '{experiment}'")
            experiment_ids = [exp.experiment_id]
        else:
            experiment_ids = [e.experiment_id for e in client.search_experiments()]
        if not experiment_ids:
            raise SweepNotFoundError(f"MLflow at {tracking_uri} has no experiments yet: run a sweep first")
        parents = _search_all(
            client, experiment_ids, f"tags.`{SWEEP_TAG}` = '{sweep_name}' and tags.`{ROLE_TAG}` = 'sweep'"
        )
        if not parents:
            known = sweep_names(client, experiment_ids)
            hint = did_you_mean(sweep_name, known)
            listing = f"; sweeps: {', '.join(known[:20])}" if known else "; no sweeps logged yet"
            raise SweepNotFoundError(f"no sweep named '{sweep_name}' in MLflow at {tracking_uri}{hint}{listing}")
        parent = parents[-1]  # the latest, if a name was ever reused across experiments
        children = _search_all(client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        # a confirmation stage's trials nest under its own run (role stage) below the parent
        for stage in [r for r in children if r.data.tags.get(ROLE_TAG) == "stage"]:
            children += _search_all(client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{stage.info.run_id}'")
        children = [r for r in children if r.data.tags.get(ROLE_TAG) != "stage"]
        space_text = _artifact_text(client, parent.info.run_id, SPACE_ARTIFACT)
    trials = tuple(
        TrialRecord(
            run_id=r.info.run_id,
            name=r.data.tags.get(TRIAL_TAG) or r.info.run_name or r.info.run_id,
            status=r.info.status,
            params=own_params(r.data.params),
            metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        )
        for r in children
    )
    return SweepRecord(
        name=sweep_name,
        tracking_uri=tracking_uri,
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent.info.run_id,
        status=parent.info.status,
        tags=dict(parent.data.tags),
        trials=trials,
        space_text=space_text,
    )


def step_history(client: MlflowClient, run_id: str, metric: str = "sdr") -> list[tuple[int, float]]:
    """``[(step, value)]`` of a per-step metric, ascending; a step logged twice (a trial that
    restarted from an earlier checkpoint) keeps its latest value."""
    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, float(m.value))
    return [(step, latest[step][1]) for step in sorted(latest)]
