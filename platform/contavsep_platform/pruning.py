"""Continual-aware early stopping: asynchronous successive halving on configuration groups.

ASHA's rule, applied to a configuration's *group mean* over its repeats (seeds x class orders;
a group of one without repeats, which is plain ASHA): rungs at ``grace_period x
reduction_factor^k`` completed steps (below the last step); when the last member of a group
reaches a rung, the group's mean of the metric is compared with the means recorded at that rung
before it, and the group is stopped if it falls below their top ``1 / reduction_factor``
quantile. Every member of a stopped group is stopped at its next result; a member reporting its
last step is never stopped (it finishes by itself).

The space refuses rungs before the first step with old classes (``grace_period >= 2``): after
step 1 no strategy has met forgetting, so a regulariser that pays a little on the first task
would be killed before it could help (see ``contavsep_platform.spaces``).
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from contavsep_platform.spaces import GROUP_KEY, REPEAT_KEY, rungs


def asha_cutoff(recorded: list[float], reduction_factor: float) -> float | None:
    """The value a new group must reach to continue: the ``1 - 1/rf`` quantile of the group
    means recorded before it at the rung (higher is better; None when none is recorded)."""
    if not recorded:
        return None
    values = sorted(recorded)
    q = (1.0 - 1.0 / reduction_factor) * (len(values) - 1)  # linear interpolation, as numpy's percentile
    low = int(math.floor(q))
    high = min(low + 1, len(values) - 1)
    frac = q - low
    return values[low] if frac == 0 else values[low] + (values[high] - values[low]) * frac


class GroupASHA(FIFOScheduler):
    """ASHA on the mean of each configuration group (see the module docstring)."""

    def __init__(
        self, *, metric: str, mode: str, max_t: int, grace_period: int, reduction_factor: float, group_size: int
    ):
        super().__init__()
        self._metric, self._mode = metric, mode
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        self.group_size = group_size
        self.rungs = rungs(grace_period, reduction_factor, max_t)
        self.recorded: dict[int, list[float]] = {r: [] for r in self.rungs}  # rung -> group means (higher = better)
        self.pending: dict[tuple[str, int], dict[str, float]] = {}  # (group, rung) -> repeat -> value
        self.stopped: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric and mode come from the space

    def _score(self, result: dict) -> float:
        value = result.get(self._metric)
        if value is None:  # not reported
            return -math.inf
        try:
            v = float(value)
        except (TypeError, ValueError):
            return -math.inf
        if math.isnan(v):
            return -math.inf  # an undefined value ranks last
        return v if self._mode == "max" else -v

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        group = str(trial.config.get(GROUP_KEY, trial.trial_id))
        step = int(float(result.get("step", 0) or 0))
        if step >= self.max_t:
            return TrialScheduler.CONTINUE  # the last step: the trial ends by itself
        if group in self.stopped:
            return TrialScheduler.STOP
        if step not in self.recorded:
            return TrialScheduler.CONTINUE
        members = self.pending.setdefault((group, step), {})
        members[str(trial.config.get(REPEAT_KEY, trial.trial_id))] = self._score(result)
        if len(members) < self.group_size:
            return TrialScheduler.CONTINUE  # judged when the whole group has reached the rung
        mean = sum(members.values()) / len(members)
        cutoff = asha_cutoff(self.recorded[step], self.reduction_factor)
        self.recorded[step].append(mean)
        del self.pending[(group, step)]
        if cutoff is not None and mean < cutoff:
            self.stopped.add(group)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"GroupASHA: rungs {self.rungs}, {len(self.stopped)} group(s) stopped"
