"""How methods and models are named and ordered in the report (the paper's Table 1 order)."""

from __future__ import annotations

from collections.abc import Sequence

# The paper's order and names of the methods (Table 1); unknown strategies follow, sorted.
STRATEGY_LABELS = {
    "finetune": "Fine-tuning",
    "lwf": "LwF",
    "ewc": "EWC",
    "plop": "PLOP",
    "ewf": "EWF",
    "avcil": "AV-CIL",
    "contavsep": "ContAV-Sep",
    "joint": "Upper bound (joint)",
}
MODEL_LABELS = {"iquery": "iQuery", "coseparation": "Co-Separation"}


def strategy_order(names: Sequence[str]) -> list[str]:
    """Strategies in the paper's Table 1 order, then any others alphabetically."""
    known = [s for s in STRATEGY_LABELS if s in names]
    return known + sorted(set(names) - set(known))


def strategy_label(name: str) -> str:
    return STRATEGY_LABELS.get(name, name)


def _model_order(model: str) -> tuple[int, str]:
    return (list(MODEL_LABELS).index(model) if model in MODEL_LABELS else 99, model)


def _objective_label(metric: str, mode: str) -> str:
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"
