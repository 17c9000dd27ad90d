"""The sweep's searcher: Optuna proposes configurations, each runs as a group of repeats.

A *configuration* is everything a trial resolves to except its repeat (seed and class order).
For every configuration Optuna proposes, :class:`GroupedOptunaSearch` hands Tune one trial per
repeat of the space (``repeats: {seeds: N, class_orders: M}``: N x M separate Ray trials, one
group) and tells Optuna once, when the group has ended:

- every member reached the last step -> COMPLETE with the group *mean* of each objective
  (several objectives: Optuna's multi-objective study, one value per objective);
- a member stopped before the last step (pruned by the scheduler, which judges groups on their
  mean, see :mod:`contavsep_platform.pruning`) -> PRUNED; a member that failed -> FAIL.

No duplicate work: a configuration (resolved dotted keys, seed excluded) runs at most once per
sweep. When Optuna proposes one that exists already (e.g. a strategy with nothing to search),
no trial starts: the Optuna trial becomes an alias and is told the existing group's outcome,
and Optuna is asked again. When it keeps proposing existing configurations, the space is
exhausted and the searcher says FINISHED, so a strategy with nothing to search runs once per
repeat however large ``num_samples`` is.

Tune checkpoints the searcher with the sweep (``save``/``restore``: the whole object, Optuna's
in-memory study included), so ``--resume`` continues the same study and groups.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from contavsep_platform.spaces import GROUP_KEY, REPEAT_KEY, STRATEGY_KEY, DefineByRun, SearchSpace, make_sampler

log = logging.getLogger("contavsep.search")

# Proposals in a row that may repeat existing configurations before the space counts as exhausted.
MAX_DUPLICATE_PROPOSALS = 50


def configuration_id(space: SearchSpace, params: Mapping[str, Any]) -> str:
    """A short content hash of a configuration: its resolved dotted overrides (base, the
    strategy's fixed values, the sampled values), repeat and bookkeeping keys excluded."""
    overrides = space.trial_overrides({k: v for k, v in params.items() if k not in (GROUP_KEY, REPEAT_KEY)})
    resolved = {k: v for k, v in overrides.items() if k not in space.repeats.keys()}
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


@dataclass
class Group:
    """One configuration and the Tune trials of its repeats."""

    config_id: str
    params: dict[str, Any]  # strategy.name + sampled values
    optuna_trials: list[Any]  # the Optuna trial that proposed it, then its aliases
    members: dict[str, str] = field(default_factory=dict)  # repeat label -> Tune trial id
    outcomes: dict[str, str] = field(default_factory=dict)  # repeat label -> complete | pruned | error
    values: dict[str, list[float]] = field(default_factory=dict)  # repeat label -> objective values
    told: tuple[str, list[float] | None] | None = None  # what Optuna was told: (state, values)


class GroupedOptunaSearch(Searcher):
    """Optuna define-by-run search over configurations, each run as a group of repeats."""

    def __init__(self, space: SearchSpace):
        import optuna

        objectives = space.objectives
        super().__init__(metric=objectives[0].metric, mode=objectives[0].mode)
        self.space = space
        self.objectives = objectives
        self.repeats = space.repeat_members()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            sampler=make_sampler(space),
            directions=["maximize" if o.mode == "max" else "minimize" for o in objectives],
        )
        for point in space.points_to_evaluate:
            self.study.enqueue_trial(dict(point))
        self.define_by_run = DefineByRun(space)
        self.groups: dict[str, Group] = {}  # config id -> group, in proposal order
        self.queue: list[tuple[str, str]] = []  # (config id, repeat label) not yet handed to Tune
        self.member_of: dict[str, tuple[str, str]] = {}  # Tune trial id -> (config id, repeat label)
        self.exhausted = False

    # ------------------------------------------------------------------ Tune's Searcher API
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode come from the space

    def suggest(self, trial_id: str) -> dict | str | None:
        if not self.queue and not self._propose():
            return Searcher.FINISHED
        config_id, label = self.queue.pop(0)
        group = self.groups[config_id]
        group.members[label] = trial_id
        self.member_of[trial_id] = (config_id, label)
        return {**group.params, **self.repeats[label], GROUP_KEY: config_id, REPEAT_KEY: label}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # the scheduler judges intermediate results (on the group mean)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.member_of:
            return
        config_id, label = self.member_of[trial_id]
        group = self.groups[config_id]
        if label in group.outcomes:  # already ended (a resumed sweep may report it again)
            return
        steps = float((result or {}).get("step", 0) or 0)
        if error:
            group.outcomes[label] = "error"
        elif steps >= self.space.num_steps:
            values = [_as_float((result or {}).get(o.metric)) for o in self.objectives]
            group.outcomes[label] = "complete"
            group.values[label] = values
        else:
            group.outcomes[label] = "pruned"
        if len(group.outcomes) == len(self.repeats):
            self._tell(group)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    # ------------------------------------------------------------------ groups
    def _propose(self) -> bool:
        """Ask Optuna for a configuration not run yet; queue its repeats. False when exhausted."""
        if self.exhausted or len(self.groups) >= self.space.num_samples:
            return False
        for _ in range(MAX_DUPLICATE_PROPOSALS):
            trial = self.study.ask()
            fixed = self.define_by_run(trial)
            params = {**trial.params, **fixed}
            config_id = configuration_id(self.space, params)
            existing = self.groups.get(config_id)
            if existing is None:
                self.groups[config_id] = Group(config_id, dict(trial.params), [trial])
                self.queue.extend((config_id, label) for label in self.repeats)
                return True
            # Same configuration again: no new trial; this Optuna trial shares the group's outcome.
            existing.optuna_trials.append(trial)
            if existing.told is not None:
                self._tell_one(trial, *existing.told)
            log.info("Optuna proposed configuration %s again (%s); not run twice", config_id, params.get(STRATEGY_KEY))
        self.exhausted = True
        log.info("the space has no configuration left that was not run: %d configurations", len(self.groups))
        return False

    def _tell(self, group: Group) -> None:
        from optuna.trial import TrialState

        outcomes = set(group.outcomes.values())
        if outcomes == {"complete"}:
            columns = list(zip(*group.values.values()))
            values = [_mean(c) for c in columns]
            state = TrialState.COMPLETE if all(v is not None for v in values) else TrialState.FAIL
            told = (state.name, values if state == TrialState.COMPLETE else None)
        elif "error" in outcomes:
            told = (TrialState.FAIL.name, None)
        else:
            told = (TrialState.PRUNED.name, None)
        group.told = told
        for trial in group.optuna_trials:
            self._tell_one(trial, *told)

    def _tell_one(self, trial: Any, state_name: str, values: list[float] | None) -> None:
        from optuna.trial import TrialState

        state = TrialState[state_name]
        if state == TrialState.COMPLETE:
            self.study.tell(trial, values if len(values) > 1 else values[0])
        else:
            self.study.tell(trial, state=state)


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def _mean(values: Any) -> float | None:
    values = list(values)
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)
