"""The nested parent run of a sweep's stage (``confirm``): opened once, re-opened on ``--resume``, ended."""

from __future__ import annotations

import logging

from mlflow import MlflowClient

from contavsep_platform.tracking.errors import _one_line
from contavsep_platform.tracking.http_limits import short_http_requests
from contavsep_platform.tracking.tags import PARENT_TAG, ROLE_TAG, SELECTION_TAG, STAGE_TAG, SWEEP_TAG, _quoted

log = logging.getLogger("contavsep_platform.tracking")


def open_stage_run(tracking_uri: str, parent_run_id: str, sweep_name: str, stage: str, description: str) -> str | None:
    """The nested parent run of a sweep's stage (``confirm``): created once, re-opened (RUNNING)
    on ``--resume``; its trials' runs nest under it. Returns its id, or None (with a warning)
    when MLflow does not answer: an outage never stops a sweep, and the stage's trials then
    nest under the sweep's run (tagged with their stage all the same)."""
    try:
        return _open_stage_run(tracking_uri, parent_run_id, sweep_name, stage, description)
    except Exception as exc:  # noqa: BLE001 - any failure of the server: the sweep goes on without the stage run
        log.warning(
            "MLflow at %s did not open the %s stage's run (%s); its trials' runs go under the sweep's run",
            tracking_uri,
            stage,
            _one_line(exc),
        )
        return None


def _open_stage_run(tracking_uri: str, parent_run_id: str, sweep_name: str, stage: str, description: str) -> str:
    client = MlflowClient(tracking_uri)
    with short_http_requests(5, 1):
        parent = client.get_run(parent_run_id)
        found = client.search_runs(
            [parent.info.experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent_run_id}' and"
            f" tags.`{ROLE_TAG}` = 'stage' and tags.`{STAGE_TAG}` = {_quoted(stage, 'stage')}",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {
            PARENT_TAG: parent_run_id,
            SWEEP_TAG: sweep_name,
            ROLE_TAG: "stage",
            STAGE_TAG: stage,
            SELECTION_TAG: description,
            "mlflow.note.content": f"{stage} stage of sweep {sweep_name}: {description}",
        }
        return client.create_run(parent.info.experiment_id, run_name=f"{sweep_name}-{stage}", tags=tags).info.run_id


def end_stage_run(tracking_uri: str, run_id: str, status: str) -> None:
    """End a stage run (FINISHED, FAILED or KILLED); when MLflow does not answer, the sweep's
    end closes it (KILLED) with the other runs left RUNNING, or a --resume ends it."""
    try:
        with short_http_requests(5, 1):
            MlflowClient(tracking_uri).set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001 - an outage never fails a sweep that ran
        log.warning("MLflow at %s did not end the stage run %s (%s)", tracking_uri, run_id, _one_line(exc))
