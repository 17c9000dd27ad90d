"""The runs' metrics: MLflow-safe names, a step's values, a trial's ``final/...`` values, the sweep's
``summary/...`` values, and metric points in batches MLflow accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric

from contavsep.metric_names import final_name, final_values, summary_values

if TYPE_CHECKING:
    from contavsep.engine import StepResult

# MLflow's REST limits per log_batch call.
_METRICS_PER_BATCH = 1000

_METRIC_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


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
                for suffix, v in (
                    ("mean", value["mean"]),
                    ("ci_low", value["ci95"][0]),
                    ("ci_high", value["ci95"][1]),
                    ("n", value["n"]),
                ):
                    if v is not None and math.isfinite(float(v)):
                        out[f"{prefix}/{name}_{suffix}"] = float(v)
    return out
