"""What a sweep will cost on a GPU, counted from its space before anything runs.

Every trial trains its sequence budget (:func:`contavsep.budget.sequence_budget`, on the
MUSIC-21 training lists a paper-size space trains on); a grid space's trials are known one by
one, a sampled space's are estimated as ``num_samples`` configurations spread evenly over its
strategies, at the budget of each strategy's default (the paper's values, the first memory
choice). A confirmation stage adds its trials at the full stream's budget. The time is the
training mixtures over :data:`contavsep.speed.MEASURED_GPU`'s speed (measured at the paper
preset's model size, batch 32): evaluation and compilation are left out, and a smaller batch
runs fewer mixtures per second, so the estimate is a lower bound; ASHA may stop trials early,
so for an ASHA space it is the most the search can train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from contavsep.budget import sequence_budget
from contavsep.config import Config, flat
from contavsep.speed import MEASURED_GPU
from contavsep_platform.spaces import STRATEGY_KEY, SearchSpace


@dataclass(frozen=True)
class GpuHours:
    """Expected GPU-hours of a sweep's stages on :data:`MEASURED_GPU`'s card."""

    search_trials: int
    search_mixtures: float
    confirm_trials: int
    confirm_mixtures: float

    @property
    def hours(self) -> float:
        return (self.search_mixtures + self.confirm_mixtures) / MEASURED_GPU.mixtures_per_s / 3600


def _default_params(space: SearchSpace, strategy: str) -> dict[str, object]:
    """A strategy's configuration at its defaults: searched keys at the config default when the
    distribution holds it, else the first choice / lower bound."""
    params: dict[str, object] = {STRATEGY_KEY: strategy}
    defaults = flat(space.trial_config({STRATEGY_KEY: strategy}))
    for key, dist in space.strategies[strategy].items():
        if not dist.is_fixed:
            params[key] = defaults[key] if dist.contains(defaults[key]) else dist.corner_values()[0]
    return params


def methods(space: SearchSpace) -> int:
    """How many methods (table rows) a space has: per strategy, its memory sizes x factor values."""
    total = 0
    for params in space.strategies.values():
        total += math.prod(
            len(d.choices) if d.kind == "choice" else 1 for k, d in params.items() if k in space.method_keys
        )
    return total


def _mixtures(cfg: Config, train_clips_per_class: Sequence[int]) -> float:
    return float(sum(s.mixtures for s in sequence_budget(cfg, train_clips_per_class).steps))


def gpu_hours(space: SearchSpace, train_clips_per_class: Sequence[int]) -> GpuHours:
    """The sweep's training mixtures per stage (see the module docstring)."""
    search = space.stage("search")
    if search.sampler.type == "grid":
        from contavsep_platform.first_step_plan import (
            trial_configs,  # imports optuna: only for a grid
        )

        configs = [cfg for _, cfg in trial_configs(search, None)]
        search_mixtures = sum(_mixtures(cfg, train_clips_per_class) for cfg in configs)
        search_trials = len(configs)
    else:
        per_strategy = [
            _mixtures(search.trial_config(_default_params(search, s)), train_clips_per_class) for s in search.strategies
        ]
        search_trials = search.num_trials
        search_mixtures = search_trials * sum(per_strategy) / len(per_strategy)
    confirm_trials, confirm_mixtures = 0, 0.0
    if space.confirms:
        confirm = space.stage("confirm")
        chosen = methods(space) + (space.confirm.max_pareto if len(space.objectives) > 1 else 0)
        per_strategy = [
            _mixtures(confirm.trial_config(_default_params(confirm, s)), train_clips_per_class)
            for s in confirm.strategies
        ]
        confirm_trials = chosen * confirm.repeats.count
        confirm_mixtures = confirm_trials * sum(per_strategy) / len(per_strategy)
    return GpuHours(search_trials, search_mixtures, confirm_trials, confirm_mixtures)


def describe(space: SearchSpace, train_clips_per_class: Sequence[int]) -> list[str]:
    """Lines for ``sweep --check``."""
    est = gpu_hours(space, train_clips_per_class)
    rate = MEASURED_GPU.mixtures_per_s
    lines = [
        f"expected GPU time on one {MEASURED_GPU.card} ({rate:,.0f} training mixtures/s, measured at the"
        f" {MEASURED_GPU.preset} preset, batch {MEASURED_GPU.batch_size}): {est.hours:,.1f} GPU-hours"
    ]
    lines.append(
        f"  search: {est.search_trials} trial(s), {est.search_mixtures / rate / 3600:,.1f} GPU-hours"
        + (" at most (ASHA may stop trials early)" if space.scheduler.type == "asha" else "")
    )
    if est.confirm_trials:
        lines.append(
            f"  confirmation: {est.confirm_trials} trial(s), {est.confirm_mixtures / rate / 3600:,.1f} GPU-hours"
        )
    lines.append("  (training only: evaluation and compilation not counted; smaller batches run fewer mixtures/s)")
    return lines
