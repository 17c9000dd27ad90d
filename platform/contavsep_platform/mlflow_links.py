"""Deep links into the MLflow UI (MLflow 3.17's hash routes) for a sweep: its runs table and its parent run.

MLflow 3's UI has two workflows, "GenAI apps & agents" (the default of a fresh browser: an
experiment opens on an Overview of traces, its runs are a "Training runs" page among GenAI
ones) and "Machine learning" (an experiment opens on its runs table, next to models and the
model registry). The links name the runs page itself, and the workflow in the ``workflowType``
URL parameter, which the UI reads before the browser's saved choice: any browser shows the
runs table with the model-training navigation.

The runs-table link filters on the sweep's tag (parent and child runs carry it) and sorts by
the trials' final SDR, best first. Filtered and sorted by anything but the creation time, the
table lists the child runs as rows of their own instead of folding them under a collapsed
parent row (MLflow 3.17 nests only the unfiltered, date-sorted table), so the trials are
visible by name without a click; the parent run, which has no final SDR, comes last.

The experiment's ``mlflow.experimentKind`` tag (set by the tracking module) does not choose the
page in MLflow 3.17's open-source UI, the workflow does: a bare ``#/experiments/<id>`` link opens
the GenAI Overview in a fresh browser.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

WORKFLOW_PARAM = "workflowType"  # the UI's URL parameter (values "genai" | "machine_learning")
MACHINE_LEARNING = "machine_learning"  # the workflow whose experiment page is the runs table
SWEEP_TAG = "contavsep.sweep"  # tracking.SWEEP_TAG (not imported: this module must not import mlflow)
ORDER_BY = "metrics.`final/sdr`"  # the runs table's sort: the trials' final SDR (tracking.final_metrics), descending


def _base(tracking_uri: str) -> str | None:
    """The UI's root for an HTTP tracking server, else None (a file store has no UI to link)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return tracking_uri.rstrip("/")


def sweep_filter(sweep_name: str) -> str:
    """The runs-table search filter of one sweep's runs (its parent and its trials)."""
    return f"tags.`{SWEEP_TAG}` = '{sweep_name}'"


def runs_table_url(tracking_uri: str, experiment_id: str, sweep_name: str | None = None) -> str | None:
    """The experiment's runs table (machine-learning workflow) sorted by final SDR, filtered to
    ``sweep_name``'s runs if given."""
    base = _base(tracking_uri)
    if base is None:
        return None
    query = {WORKFLOW_PARAM: MACHINE_LEARNING}
    if sweep_name:
        query["searchFilter"] = sweep_filter(sweep_name)
    query.update(orderByKey=ORDER_BY, orderByAsc="false")
    return f"{base}/#/experiments/{quote(str(experiment_id))}/runs?{urlencode(query, quote_via=quote)}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """One run's page (overview, metrics, artifacts, system metrics)."""
    base = _base(tracking_uri)
    if base is None:
        return None
    return (
        f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}"
        f"?{urlencode({WORKFLOW_PARAM: MACHINE_LEARNING})}"
    )


def link_lines(
    tracking_uri: str | None, experiment_id: str | None, sweep_name: str, parent_run_id: str | None
) -> list[str]:
    """The lines a command ends with: where to compare the sweep's runs and its parent run.

    Falls back to the bare server address when the experiment id is unknown (tracking was off
    or the server could not be asked).
    """
    if not tracking_uri:
        return []
    if not experiment_id or _base(tracking_uri) is None:
        return [f"MLflow: {tracking_uri}  (sweep '{sweep_name}')"]
    lines = [f"MLflow runs of sweep {sweep_name}: {runs_table_url(tracking_uri, experiment_id, sweep_name)}"]
    if parent_run_id:
        lines.append(f"MLflow sweep run (summary, ranking): {run_url(tracking_uri, experiment_id, parent_run_id)}")
    return lines
