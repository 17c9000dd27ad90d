"""What shared first steps save on a grid sweep: counted from the space, before anything runs.

Every trial of a ``sampler: grid`` space is known in advance, so its step-0 key
(:mod:`contavsep.first_step`) and its budget (:mod:`contavsep.budget`) are too. With one trial
at a time, each key's step 0 is trained once. With ``c`` trials at a time, a trial that starts
while the first trial of its key is still in step 0 trains step 0 as well (no trial waits
holding a GPU): :func:`first_step_plan` replays the grid in Optuna's visiting order on ``c``
slots, with iterations as the clock, to say how much of the best case a cluster keeps.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from contavsep.budget import sequence_budget
from contavsep.config import Config
from contavsep.first_step import trial_key
from contavsep_platform.spaces import REPEAT_KEY, SearchSpace, make_sampler


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of the grid: its step-0 key (None: not shared) and its budget in iterations."""

    label: str
    key: str | None
    step0_iterations: int
    iterations: int


def trial_configs(space: SearchSpace, order_seed: int | None) -> list[tuple[str, Config]]:
    """Every (label, config) of a grid sweep, in the grid sampler's visiting order."""
    import optuna

    grid = space.grid()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=make_sampler(space) if order_seed is None else optuna.samplers.GridSampler(grid, seed=order_seed)
    )
    out = []
    for _ in range(space.num_samples):
        trial = study.ask()  # never told: the grid sampler skips points of running trials
        params = {k: trial.suggest_categorical(k, v) for k, v in grid.items()}
        for label, values in space.repeat_members().items():
            cfg = space.trial_config({**params, **values, REPEAT_KEY: label})
            out.append((f"{trial.number}/{label}", cfg))
    return out


def planned_trials(
    space: SearchSpace, train_clips_per_class: Sequence[int], order_seed: int | None = None
) -> list[PlannedTrial]:
    """The grid's trials with their step-0 keys (one dataset for all: its hash is a placeholder)."""
    trials = []
    for label, cfg in trial_configs(space, order_seed):
        key = trial_key(cfg, "the sweep's dataset", space.resources.workers)
        budget = sequence_budget(cfg, train_clips_per_class)
        trials.append(
            PlannedTrial(label, None if key is None else key[0], budget.steps[0].iterations, budget.iterations)
        )
    return trials


def replay(trials: Sequence[PlannedTrial], concurrency: int) -> list[bool]:
    """Which trials find their step 0 published when they start, ``concurrency`` at a time in
    order (iterations as the clock; a trial that trains step 0 publishes when it ends)."""
    slots = [0.0] * max(1, concurrency)  # when each slot is free again
    published: dict[str, float] = {}  # key -> when its first state was published
    reused = []
    for t in trials:
        start = heapq.heappop(slots)
        hit = t.key is not None and published.get(t.key, float("inf")) <= start
        reused.append(hit)
        duration = t.iterations - (t.step0_iterations if hit else 0)
        if t.key is not None and not hit:
            published[t.key] = min(published.get(t.key, float("inf")), start + t.step0_iterations)
        heapq.heappush(slots, start + duration)
    return reused


def describe(
    space: SearchSpace, train_clips_per_class: Sequence[int], concurrencies: Sequence[int] = (1, 4, 8, 16)
) -> list[str]:
    """Lines for ``sweep --check``: the shared first steps of a grid sweep at a few concurrencies."""
    trials = planned_trials(space, train_clips_per_class)
    total = sum(t.iterations for t in trials)
    step0 = sum(t.step0_iterations for t in trials)
    groups = len({t.key for t in trials if t.key is not None})
    lines = [
        f"shared first steps: {len(trials)} trials have {groups} distinct step-0 key(s)"
        f" ({sum(1 for t in trials if t.key is None)} not shared); step 0 is {step0:,} of the sweep's {total:,} iterations"
    ]
    for c in concurrencies:
        reused = replay(trials, c)
        saved = sum(t.step0_iterations for t, r in zip(trials, reused) if r)
        lines.append(
            f"  {c:>2} trial(s) at a time: {sum(reused)} step 0s loaded instead of trained,"
            f" {saved:,} iterations saved ({100 * saved / max(total, 1):.1f} % of the sweep)"
        )
    return lines
