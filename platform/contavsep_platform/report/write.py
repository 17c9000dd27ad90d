"""Writing a sweep's report from MLflow into a folder, and logging it to the sweep's parent run."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from contavsep_platform.report.build import Report, build_report
from contavsep_platform.report.load import _artifact_text, _talking_to, load_sweep, step_history

R_ARTIFACT = "results/R.json"  # a trial's R matrices (tracking: results/R.json)
REPORT_ARTIFACTS = "report"  # the parent run's folder of the report (log_report)

log = logging.getLogger("contavsep.report")


def write_report(
    tracking_uri: str,
    sweep_name: str,
    out_dir: str | Path,
    experiment: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> Report:
    """Read the sweep from MLflow and write its report into ``out_dir``."""
    sweep = load_sweep(tracking_uri, sweep_name, experiment)
    client = MlflowClient(tracking_uri)
    with _talking_to(tracking_uri):
        histories = {t.run_id: step_history(client, t.run_id, "sdr") for t in sweep.trials}

        def r_document(run_id: str) -> Mapping[str, Any] | None:
            text = _artifact_text(client, run_id, R_ARTIFACT)
            return json.loads(text) if text else None

        return build_report(sweep, histories, out_dir, metric, mode, r_document)


def log_report(tracking_uri: str, sweep_name: str, run_id: str) -> bool:
    """Write the sweep's report and log it as artifacts of the parent run ``run_id`` (under
    ``report/``). Never raises: a sweep that ended must not fail on its report; returns whether
    it was logged."""
    try:
        with tempfile.TemporaryDirectory(prefix="contavsep-report-") as tmp:
            write_report(tracking_uri, sweep_name, tmp)
            with _talking_to(tracking_uri):
                MlflowClient(tracking_uri).log_artifacts(run_id, tmp, REPORT_ARTIFACTS)
        return True
    except Exception as exc:  # noqa: BLE001 - reported, and `contavsep report` writes it again
        log.warning(
            "the report of sweep %s was not logged to MLflow (%s); `contavsep report --sweep %s` writes it",
            sweep_name,
            " ".join(str(exc).split())[:300],
            sweep_name,
        )
        return False
