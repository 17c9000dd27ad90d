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

The study is persistent when the searcher gets a :class:`~contavsep_platform.study.StudyJournal`
(what a sweep passes): Optuna's journal in the sweep's folder, named after the sweep, which
``optuna-dashboard`` and ``optuna.load_study`` open during and after the sweep. Tune checkpoints
the searcher with the sweep (``save``/``restore``: its groups and the journal's location; without
a journal, Optuna's in-memory study too), so ``--resume`` continues the same study and groups. A
journal can be ahead of Tune's last checkpoint (a sweep killed hard): a trial it shows running
that the restored searcher never handed out is told FAIL, so that the study has no trial
running forever; a group told twice keeps its first outcome.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from contavsep.signature import signature
from contavsep_platform.spaces import (
    GROUP_KEY,
    REPEAT_KEY,
    STRATEGY_KEY,
    DefineByRun,
    SearchSpace,
    make_sampler,
)
from contavsep_platform.study import Direction, StudyJournal

log = logging.getLogger("contavsep.search")

# Proposals in a row that may repeat existing configurations before the space counts as exhausted.
MAX_DUPLICATE_PROPOSALS = 50


def configuration_id(space: SearchSpace, params: Mapping[str, Any]) -> str:
    """A short content hash of a configuration: its resolved dotted overrides (base, the
    strategy's fixed values, the sampled values), repeat and bookkeeping keys excluded."""
    overrides = space.trial_overrides({k: v for k, v in params.items() if k not in (GROUP_KEY, REPEAT_KEY)})
    resolved = {k: v for k, v in overrides.items() if k not in space.repeats.keys()}
    return signature(resolved)


@dataclass
class Group:
    """One configuration and the Tune trials of its repeats."""

    config_id: str
    params: dict[str, Any]  # strategy.name + sampled values
    optuna_trials: list[int]  # numbers of the Optuna trial that proposed it, then of its aliases
    members: dict[str, str] = field(default_factory=dict)  # repeat label -> Tune trial id
    outcomes: dict[str, str] = field(default_factory=dict)  # repeat label -> complete | pruned | error
    # repeat label -> objective values (None: the run reported no finite value for it)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    told: tuple[str, list[float] | None] | None = None  # what Optuna was told: (state, values)


class GroupedOptunaSearch(Searcher):
    """Optuna define-by-run search over configurations, each run as a group of repeats."""

    def __init__(self, space: SearchSpace, journal: StudyJournal | None = None):
        objectives = space.objectives
        super().__init__(metric=objectives[0].key, mode=objectives[0].mode)
        self.space = space
        self.objectives = objectives
        self.repeats = space.repeat_members()
        self.journal = journal  # None: the study lives in memory (and in Tune's pickle of this object)
        self._study: Any = None
        self._open_study()
        self.define_by_run = DefineByRun(space)
        self.groups: dict[str, Group] = {}  # config id -> group, in proposal order
        self.queue: list[tuple[str, str]] = []  # (config id, repeat label) not yet handed to Tune
        self.member_of: dict[str, tuple[str, str]] = {}  # Tune trial id -> (config id, repeat label)
        self.exhausted = False

    # ------------------------------------------------------------------ Tune's Searcher API
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode come from the space

    # Ray annotates suggest as returning dict | None, but documents (and checks for) Searcher.FINISHED, a str.
    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]
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
            values = [_as_float((result or {}).get(o.key)) for o in self.objectives]
            group.outcomes[label] = "complete"
            group.values[label] = values
        else:
            group.outcomes[label] = "pruned"
        if len(group.outcomes) == len(self.repeats):
            self._tell(group)

    def save(self, checkpoint_path: str) -> None:
        if self.journal is not None:
            self.journal.sync()
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))
        self._orphans_failed()

    def __getstate__(self) -> dict[str, Any]:
        # With a journal, the study is on storage: pickle where it is, not the study.
        return {k: v for k, v in self.__dict__.items() if not (k == "_study" and self.journal is not None)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "study" in state:  # pickled before the study had a journal (it was then always in memory)
            state = {**state, "_study": state["study"]}
            del state["study"]
        self.__dict__.update(state)
        self.__dict__.setdefault("journal", None)
        if self.journal is not None:
            self._study = None  # opened on first use, in the process that resumes

    # ------------------------------------------------------------------ the study
    @property
    def study(self) -> Any:
        """The Optuna study (opened from the journal on first use after a restore)."""
        if self._study is None:
            self._open_study()
        return self._study

    def _open_study(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        directions: list[Direction] = ["maximize" if o.mode == "max" else "minimize" for o in self.objectives]
        if self.journal is None:
            self._study, created = optuna.create_study(sampler=make_sampler(self.space), directions=directions), True
        else:
            self._study, created = self.journal.open(directions, make_sampler(self.space))
        if created:
            for point in self.space.points_to_evaluate:
                self._study.enqueue_trial(dict(point))
            self._sync()

    def _orphans_failed(self) -> None:
        """Tell FAIL every trial the study shows running that no group of this searcher holds
        (asked after Tune's last checkpoint of a sweep that was killed)."""
        from optuna.trial import TrialState

        held = {n for g in self.groups.values() for n in g.optuna_trials}
        lost = [
            t.number
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number not in held
        ]
        for number in lost:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        if lost:
            log.info("Optuna trial(s) %s were asked after the sweep's last checkpoint: told FAIL", lost)
            self._sync()

    def _sync(self) -> None:
        if self.journal is not None:
            self.journal.sync()

    def close(self) -> None:
        """Upload the study a last time (an S3 journal) and drop its local copy."""
        if self.journal is not None:
            self.journal.close()

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
            # Shown by optuna-dashboard next to each trial: which configuration (group) it is.
            trial.set_user_attr("configuration", config_id)
            trial.set_user_attr("repeats", len(self.repeats))
            if existing is None:
                self.groups[config_id] = Group(config_id, dict(trial.params), [trial.number])
                self.queue.extend((config_id, label) for label in self.repeats)
                return True
            # Same configuration again: no new trial; this Optuna trial shares the group's outcome.
            trial.set_user_attr("same_as_trial", existing.optuna_trials[0])
            existing.optuna_trials.append(trial.number)
            if existing.told is not None:
                self._tell_one(trial.number, *existing.told)
            log.info("Optuna proposed configuration %s again (%s); not run twice", config_id, params.get(STRATEGY_KEY))
        self.exhausted = True
        log.info("the space has no configuration left that was not run: %d configurations", len(self.groups))
        return False

    def _tell(self, group: Group) -> None:
        from optuna.trial import TrialState

        outcomes = set(group.outcomes.values())
        told: tuple[str, list[float] | None]
        if outcomes == {"complete"}:
            columns = list(zip(*group.values.values()))
            means = [_mean(c) for c in columns]
            values = [v for v in means if v is not None]
            # COMPLETE needs every objective's mean; one missing fails the trial.
            told = (TrialState.COMPLETE.name, values) if len(values) == len(means) else (TrialState.FAIL.name, None)
        elif "error" in outcomes:
            told = (TrialState.FAIL.name, None)
        else:
            told = (TrialState.PRUNED.name, None)
        group.told = told
        for number in group.optuna_trials:
            self._tell_one(number, *told)
        self._sync()

    def _tell_one(self, number: int, state_name: str, values: list[float] | None) -> None:
        from optuna.trial import TrialState

        state = TrialState[state_name]
        # skip_if_finished: a journal ahead of Tune's checkpoint may have this outcome already.
        if state == TrialState.COMPLETE:
            assert values is not None  # _tell tells COMPLETE only with every objective's value
            self.study.tell(number, values if len(values) > 1 else values[0], skip_if_finished=True)
        else:
            self.study.tell(number, state=state, skip_if_finished=True)


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
