"""The tags runs carry (runs are found again by tag, not by name) and quoting a value for a tag filter."""

from __future__ import annotations

from contavsep_platform.errors import UserError

SWEEP_TAG = "contavsep.sweep"
# "sweep" (parent run) | "trial" (child run) | "stage" (the confirmation stage's nested parent)
ROLE_TAG = "contavsep.role"
STAGE_TAG = "contavsep.stage"  # search | confirm: which stage of the sweep a trial (or stage run) belongs to
SELECTION_TAG = "contavsep.selection"  # what the sweep's ranking chose on, in words
CONFIG_TAG = "contavsep.configuration"  # a trial's configuration (group) id: links a confirmation run to the search's
TRIAL_TAG = "contavsep.trial"
STRATEGY_TAG = "contavsep.strategy"
PARETO_TAG = "contavsep.pareto"  # "true" on child runs of configurations on a multi-objective sweep's Pareto front
NODE_TAG = "contavsep.node"  # the Ray node a trial's rank 0 (last) ran on
PARENT_TAG = "mlflow.parentRunId"


def _quoted(value: str, what: str) -> str:
    """``value`` as a search-filter string literal; MLflow filters have no quote escaping."""
    if "'" in value or "\\" in value:
        raise UserError(f"{what} '{value}' must not contain quotes or backslashes")
    return f"'{value}'"
