"""The MLflow experiment: found or created, tagged as a model-training one."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE

DEFAULT_EXPERIMENT = "contavsep"
# MLflow 3's experiment kind (an experiment tag; values from the UI's ExperimentKind enum):
# "custom_model_development" is the UI's "Machine learning" kind, whose page is the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# Kinds the UI guessed or nobody chose: replaced by ours; a kind a person chose is kept.
_UNCHOSEN_KINDS = frozenset({"", "no_inferred_type", "genai_development_inferred", "custom_model_development_inferred"})


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
