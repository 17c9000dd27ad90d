"""Objective names and the splits they are measured on (``val/<name>``, test unprefixed)."""

from __future__ import annotations

from contavsep.metric_names import SCORES, group_name

# Per-step values a sweep may optimise. Each is defined at every step (old-class means are not:
# they do not exist at step 1, where ASHA already compares trials).
OBJECTIVES = (
    *SCORES,
    "sdri",
    *(f"{m}_new" for m in SCORES),
    *(group_name("average_incremental", m) for m in SCORES),
)
# Values that may be further objectives (final values only; the first objective is pruned on).
FINAL_OBJECTIVES = OBJECTIVES + (
    *(f"{m}_old" for m in SCORES),
    *(group_name(group, m) for group in ("forgetting", "bwt") for m in SCORES),
    "memory/clips",
)
# The splits an objective is measured on. Trial results carry validation values as val/<name>
# and test values unprefixed (<name>, as before validation sets existed).
SPLITS = ("val", "test")
# Objectives that belong to no split (a cost, not a score).
SPLIT_FREE = ("memory/clips",)


def split_of(metric: str) -> str | None:
    """The split a named objective is measured on (``val/sdr`` -> val), None when it names none."""
    head, _, rest = metric.partition("/")
    return head if head in SPLITS and rest else None


def base_metric(metric: str) -> str:
    """The value's name without its split: ``val/forgetting/sdr`` -> ``forgetting/sdr``."""
    return metric.split("/", 1)[1] if split_of(metric) else metric


def result_key(metric: str) -> str:
    """The key of a named objective in trial results (Tune) and comparisons: ``val/<name>`` as it
    is, ``test/<name>`` -> ``<name>`` (test values are unprefixed), split-free names as they are."""
    return base_metric(metric) if split_of(metric) == "test" else metric


def publish_key(metric: str) -> str:
    """The result key a table publishes for a named objective: its test value (``val/sdr`` ->
    ``sdr``; split-free names as they are)."""
    return result_key(f"test/{base_metric(metric)}" if split_of(metric) else metric)


def _scores_beyond_sdr(metric: str) -> bool:
    """Whether a value is built from SIR or SAR (``val/sir``, ``val/forgetting/sar``, ``val/sir_old``)."""
    return any(part.split("_")[0] in ("sir", "sar") for part in base_metric(metric).split("/"))


def named_metric(metric: str, split: str) -> str:
    """``metric`` with its split named: a bare name is measured on ``split``."""
    return metric if split_of(metric) or metric in SPLIT_FREE else f"{split}/{metric}"
