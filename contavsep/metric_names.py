"""Every flat metric name, in one place: what the engine reports per step, what Tune and MLflow
receive, and what spaces, the report and the CLI read back.

One value has one *step name*, the vocabulary of spaces, Tune results and comparisons:

- the scores over the classes seen so far: ``sdr``, ``sir``, ``sar``, ``sdr_old``, ``sdr_new``,
  ``sdr_mix``, ``sdri`` (the engine's :func:`contavsep.metrics.step_metrics`);
- the continual summary values as of a step: ``<group>/<metric>`` with the groups
  :data:`SUMMARY_GROUPS` (``forgetting/sdr``, ``bwt/sdr``, ``average_incremental/sdr``);
- the training loss terms: ``loss/<term>`` (``loss/main``, ``loss/dist``, ``loss/total``);
- the validation values: the test value's name after ``val/`` (``val/sdr``,
  ``val/forgetting/sdr``); test values are unprefixed (as before validation sets existed).

A finished trial's MLflow metrics keep the spelling runs have been logged with since the first
sweep, so old and new runs stay comparable in the MLflow UI: ``final/<name>`` with the groups
written ``<prefix><metric>`` (``final/forgetting_sdr``, ``final/avg_incremental_sdr``) and the
validation ones under ``final/val/``. :func:`final_name` and :func:`step_name_of_final` are the
two directions of that one mapping.

The step index: the engine, checkpoints (``step=<k>``) and MLflow's x axis count steps from 0
(step 0 = the first task); Tune's ``step`` result and every "step k/T" printed count the
completed steps, 1..T (:func:`completed_steps`), which is what ASHA's rungs and ``grace_period``
are in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCORES = ("sdr", "sir", "sar")
SUMMARY_GROUPS = ("forgetting", "bwt", "average_incremental")
VAL_PREFIX = "val/"
LOSS_PREFIX = "loss/"
FINAL_PREFIX = "final/"
# How each summary group is written inside a final MLflow name (final/forgetting_sdr).
_FINAL_GROUP_PREFIX = {"forgetting": "forgetting_", "bwt": "bwt_", "average_incremental": "avg_incremental_"}


def completed_steps(step_index: int) -> int:
    """The 1-based count of steps done after step ``step_index`` (0-based): Tune's ``step``."""
    return step_index + 1


def loss_name(term: str) -> str:
    """``main`` -> ``loss/main``: a training loss term's step name."""
    return LOSS_PREFIX + term


def group_name(group: str, score: str) -> str:
    """``forgetting``, ``sdr`` -> ``forgetting/sdr``: a summary value's step name."""
    if group not in SUMMARY_GROUPS:
        raise ValueError(f"unknown summary group {group!r}; one of {', '.join(SUMMARY_GROUPS)}")
    return f"{group}/{score}"


def val_name(name: str) -> str:
    """``sdr`` -> ``val/sdr``: the validation value of a test value's step name."""
    return VAL_PREFIX + name


def is_val(name: str) -> bool:
    return name.startswith(VAL_PREFIX)


def summary_values(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary values defined as of a step, by step name (``forgetting/sdr``, ...), the
    validation results' (``summary["val"]``) under ``val/``. Undefined values (None) are left
    out. What Tune and MLflow both get with every step."""
    out: dict[str, float] = {}
    for prefix, part in (("", summary), (VAL_PREFIX, summary.get("val") or {})):
        for group in SUMMARY_GROUPS:
            for score, value in (part.get(group) or {}).items():
                if value is not None:
                    out[prefix + group_name(group, score)] = float(value)
    return out


def final_name(step_name: str) -> str:
    """A step name's final MLflow metric: ``forgetting/sdr`` -> ``final/forgetting_sdr``,
    ``val/sdr`` -> ``final/val/sdr``, ``sdr`` -> ``final/sdr``."""
    split = VAL_PREFIX if is_val(step_name) else ""
    name = step_name.removeprefix(split)
    group, _, score = name.partition("/")
    if score and group in _FINAL_GROUP_PREFIX:
        name = _FINAL_GROUP_PREFIX[group] + score
    return FINAL_PREFIX + split + name


def step_name_of_final(key: str) -> str:
    """The inverse of :func:`final_name` (``final/forgetting_sdr`` -> ``forgetting/sdr``); keys
    that are not final names (``memory/clips``) are returned as they are."""
    if not key.startswith(FINAL_PREFIX):
        return key
    name = key.removeprefix(FINAL_PREFIX)
    split = VAL_PREFIX if is_val(name) else ""
    name = name.removeprefix(split)
    for group, prefix in _FINAL_GROUP_PREFIX.items():
        if name.startswith(prefix):
            return split + group_name(group, name.removeprefix(prefix))
    return split + name


def final_values(summary: Mapping[str, Any]) -> dict[str, float]:
    """A finished sequence's values by step name, from its results summary: the last step's
    scores (``sdr``, ``sdr_old``, ``sdr_mix``, ``sdri``, ``sources``, ...), every summary group
    (``forgetting/sdr``, ...), ``skipped``; the validation results' under ``val/``. Undefined
    values (None, non-numbers) are left out."""
    out: dict[str, float] = {}
    last = summary.get("final") or {}
    for key, value in last.items():
        if key != "step":
            _put(out, key, value)
    for group in SUMMARY_GROUPS:
        for score, value in (summary.get(group) or {}).items():
            _put(out, group_name(group, score), value)
    _put(out, "skipped", summary.get("skipped", last.get("skipped")))
    if summary.get("val"):
        out.update({val_name(k): v for k, v in final_values(summary["val"]).items()})
    return out


def _put(out: dict[str, float], name: str, value: Any) -> None:
    if value is None or isinstance(value, (str, bytes)):
        return
    try:
        out[name] = float(value)
    except (TypeError, ValueError):
        return


# Platform metrics outside the engine's steps (MLflow only):
# on a sweep's parent run, the cluster's alive worker nodes and GPUs over the sweep (step = second
# of the sweep; contavsep_platform.sweep.cluster_watch), and on a trial's run, whether an attempt
# downloaded the dataset into its node's cache (1 or 0, one point per attempt).
WORKER_NODES_METRIC = "cluster/worker_nodes"
GPUS_METRIC = "cluster/gpus"
DOWNLOADED_METRIC = "data/downloaded"
