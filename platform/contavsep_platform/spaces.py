"""Search spaces: declarative YAML -> validated :class:`SearchSpace` -> Optuna define-by-run.

A space file (``search_spaces/*.yaml``) holds::

    name: demo                      # default sweep-name stem and MLflow experiment
    base: {preset: tiny, data.uri: "{storage}/datasets/synth-default", ...}   # fixed dotted keys
    common:                         # optional: distributions every strategy gets
      memory.per_class: {choice: [0, 1]}
    strategies:                     # strategy name -> its own distributions (win over common)
      finetune: {}
      contavsep:
        strategy.lambda_dist: {loguniform: [0.03, 1.0]}
        strategy.temperature: 0.05  # a bare value is fixed
    metric: sdr                     # reported per step; the last step's value is the objective
    mode: max                       #   (a bare name is measured on the split of select_on: validation)
    objectives:                     # instead of metric/mode: several objectives (Pareto front)
      - {metric: sdr, mode: max}    #   the first is reported at every step (pruning uses it)
      - {metric: forgetting/sdr, mode: min}
    select_on: val                  # val (default) | test: the split objectives and pruning read;
                                    #   test is optimistic and labelled so wherever a result is shown
    factors: [model.name]           # keys that are table rows (part of the method), never chosen
    confirm: {seeds: 3}             # the best configuration of each method by validation, run again on
                                    #   3 fresh seeds; only those runs' test numbers are ranked
    protocol: full_stream           # full_stream | {type: first_tasks, tasks: 2}: search on the first
                                    #   tasks of the stream, confirm the frozen winner on all of it
    num_samples: 6                  # configurations (each runs once per repeat)
    repeats: {seeds: 2, class_orders: 1}   # every configuration on each seed x class order (first_seed: 0)
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # or {type: fifo}
    sampler: {type: tpe, seed: 0}   # tpe | random | grid (grid: choice/fixed-only spaces)
    resources: {workers: 1, cpus: 1, gpus: 0, driver_cpus: 0.1}      # per Train worker; DDP if workers > 1
    max_failures: 1                 # Ray Train restarts of a failed trial (resumes from its last step)
    points_to_evaluate: paper_defaults   # or a list of {strategy.name: ..., key: value}

Distributions: ``{uniform: [lo, hi]}`` (optional ``step``), ``{loguniform: [lo, hi]}``,
``{int: [lo, hi]}`` (optional ``step``, ``log``), ``{choice: [a, b, ...]}``, ``{fixed: v}`` or
a bare value. ``{storage}`` in a string of ``base`` is replaced by the storage root of the
platform (``file:///...`` or ``s3://bucket``), so one file serves local and S3 setups.

Selection: a *method* is a strategy, its memory size and every ``factors`` key; choosing among
the configurations of one method (its other searched keys) is a *selection*. A space selects
when some strategy searches a key that is not part of the method. Objectives and pruning read the
validation sets (``val/<name>`` in trial results) unless ``select_on: test`` says otherwise; the
numbers a sweep publishes are test numbers (``test/<name>``: unprefixed in trial results), from
the confirmation runs when the space has ``confirm``.

Everything is checked before a trial starts: every key against the config (a typo names the
closest key), every strategy name against the registry, and every bound and choice by building
the real :class:`contavsep.config.Config` with it (cross-field rules included).

The Optuna space is define-by-run: the strategy first (``trial.suggest_categorical("strategy.name",
...)``), then only that strategy's parameters, so Optuna never sees λ_ewc on a LwF trial. A key
searched by several strategies is one Optuna parameter; its distributions must be of one kind
(Optuna refuses a parameter whose kind changes between trials), which is checked here.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contavsep.config import (
    LEGACY_DEFAULTS,
    LEGACY_STRATEGY_DEFAULTS,
    RETIRED_KEYS,
    SPEED_KEYS,
    Config,
    ConfigError,
    flat,
    make_config,
    valid_keys,
    yaml_error_line,
)
from contavsep.metric_names import SCORES, group_name
from contavsep.suggest import did_you_mean
from contavsep_platform.errors import PlatformError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

STRATEGY_KEY = "strategy.name"
STORAGE_PLACEHOLDER = "{storage}"
# Bookkeeping keys of a trial's Tune config (not config keys): its configuration group (a
# content hash of the configuration, see contavsep_platform.search) and its repeat ("s0-o1").
GROUP_KEY = "group"
REPEAT_KEY = "repeat"
# A confirmation trial's Tune config: {"trial": its parameters} (one value of the stage's grid).
CONFIRM_TRIAL_KEY = "trial"
# The config keys a repeat sets (a seed; a class order when there are several).
REPEAT_CONFIG_KEYS = ("train.seed", "data.seed", "data.shuffle_classes")
# Per-step values a sweep may optimise. Each is defined at every step (old-class means are not:
# they do not exist at step 1, where ASHA already compares trials).
OBJECTIVES = (
    *SCORES, "sdri", *(f"{m}_new" for m in SCORES), *(group_name("average_incremental", m) for m in SCORES),
)
# Values that may be further objectives (final values only; the first objective is pruned on).
FINAL_OBJECTIVES = OBJECTIVES + (
    *(f"{m}_old" for m in SCORES), *(group_name(group, m) for group in ("forgetting", "bwt") for m in SCORES), "memory/clips",
)
# The first step whose evaluation includes old classes, as Tune's completed-steps count: a rung
# before it compares trials that have not met forgetting yet (step 1 is plain supervised training).
FIRST_STEP_WITH_OLD_CLASSES = 2
DISTRIBUTION_KINDS = ("uniform", "loguniform", "int", "choice", "fixed")
TOP_LEVEL_KEYS = (
    "name", "description", "experiment", "base", "common", "strategies", "metric", "mode", "objectives", "num_samples",
    "repeats", "scheduler", "sampler", "resources", "max_failures", "points_to_evaluate", "select_on", "factors",
    "confirm", "protocol",
)
# The splits an objective is measured on. Trial results carry validation values as val/<name>
# and test values unprefixed (<name>, as before validation sets existed).
SPLITS = ("val", "test")
# Objectives that belong to no split (a cost, not a score).
SPLIT_FREE = ("memory/clips",)
# Keys that are always part of the method (a row of the table), never selected among.
METHOD_KEYS = ("memory.per_class",)
PROTOCOLS = ("full_stream", "first_tasks")


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


# Keys a space may not search: they must be equal across trials for the sweep to make sense.
UNSEARCHABLE = {
    "preset": "the size preset must be the same for all trials; set it in base",
    STRATEGY_KEY: "strategies are chosen by the 'strategies' section",
    "data.num_steps": "all trials must have the same number of steps (ASHA compares trials at equal steps)",
    "data.uri": "all trials must use the same dataset",
    "train.seed": "seeds are repeats, not hyperparameters: use repeats.seeds",
    "data.seed": "class orders are repeats, not hyperparameters: use repeats.class_orders",
    "data.shuffle_classes": "class orders are repeats, not hyperparameters: use repeats.class_orders",
    "eval.validate": "every trial must measure what the sweep selects on; set it in base",
    "eval.val_windows_per_clip": "every trial must be chosen on the same validation sets; set it in base",
    "eval.val_pairs_per_clip": "every trial must be chosen on the same validation sets; set it in base",
    "eval.val_seed": "every trial must be chosen on the same validation sets; set it in base",
    "eval.val_metrics": "every trial must measure what the sweep selects on; set it in base",
}


SELECTION_NOTES = {
    "none": "no selection: every configuration of each method ran",
    "val": "selected on validation",
    "test": "selected on test (optimistic)",
}


def selection_text(selection: str, *, first_tasks: int = 0, confirmed_runs: int | None = None) -> str:
    """What a table's configurations were chosen on, in words: every table, the parent run's
    ``contavsep.selection`` tag and the report carry it. ``selection``: none | val | test;
    ``first_tasks``: the search saw only the first k tasks (0: the whole stream);
    ``confirmed_runs``: fresh runs per method behind a confirmed table (None: not confirmed)."""
    text = SELECTION_NOTES[selection]
    if selection != "none" and first_tasks:
        text += f" of the first {first_tasks} tasks"
    if confirmed_runs is not None:
        return f"{text}, confirmed on {confirmed_runs} fresh run(s) per method (seeds never used by the search)"
    if selection != "none" and first_tasks:
        return f"{text}; test numbers of those tasks only (not confirmed on the full stream)"
    if selection == "val":
        return f"{text}; test numbers from the search's own seeds (not confirmed on fresh seeds)"
    return text


# Keys only base may set (a strategy may not even fix them to its own value).
BASE_ONLY = ("preset", STRATEGY_KEY, "eval.validate", "eval.val_windows_per_clip", "eval.val_pairs_per_clip", "eval.val_seed",
             "eval.val_metrics")


class SpaceError(ConfigError, PlatformError):
    """A search space file is invalid; the message names the file, the entry and the fix."""




# ----------------------------------------------------------------------------------------------
# distributions


@dataclass(frozen=True)
class Distribution:
    """One searched (or fixed) value of a dotted config key."""

    kind: str  # uniform | loguniform | int | choice | fixed
    low: float | None = None
    high: float | None = None
    step: float | None = None  # uniform / int grid step (None = continuous / 1)
    log: bool = False  # int only: sample on a log scale
    choices: tuple[Any, ...] = ()
    value: Any = None  # fixed

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed"

    def corner_values(self) -> list[Any]:
        """The values that validation builds a config with: bounds, every choice, or the value."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]

    def _bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a uniform, loguniform or int distribution (the parser always sets both)."""
        assert self.low is not None and self.high is not None, f"a {self.kind} distribution without bounds"
        return self.low, self.high

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a value this distribution can produce (for starting points)."""
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self._bounds()
        if not low <= value <= high:
            return False
        if self.kind == "int":
            step = int(self.step or 1)
            return float(value).is_integer() and (int(value) - int(low)) % step == 0
        if self.kind == "uniform" and self.step:
            ratio = (value - low) / self.step
            return abs(ratio - round(ratio)) < 1e-9
        return True

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask an Optuna trial (or Ray's captor of one) for a value of parameter ``name``."""
        if self.kind == "uniform":
            return trial.suggest_float(name, self.low, self.high, step=self.step)
        if self.kind == "loguniform":
            return trial.suggest_float(name, self.low, self.high, log=True)
        if self.kind == "int":
            low, high = self._bounds()
            return trial.suggest_int(name, int(low), int(high), step=int(self.step or 1), log=self.log)
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        raise ValueError(f"a fixed value is not suggested ({name})")

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.value)
        if self.kind == "choice":
            return f"choice{list(self.choices)}"
        extra = f" step {self.step}" if self.step else ""
        extra += " log" if self.log else ""
        return f"{self.kind}[{self.low}, {self.high}]{extra}"


def parse_distribution(raw: Any, where: str) -> Distribution:
    """Parse one YAML entry (a bare value or a one-kind mapping) into a :class:`Distribution`."""
    if not isinstance(raw, Mapping):
        if isinstance(raw, (list, tuple)):
            raise SpaceError(f"{where}: a list is ambiguous; write {{choice: {list(raw)}}} to search over it")
        return Distribution("fixed", value=raw)
    kinds = [k for k in raw if k in DISTRIBUTION_KINDS]
    unknown = [k for k in raw if k not in DISTRIBUTION_KINDS + ("step", "log")]
    if unknown:
        raise SpaceError(
            f"{where}: unknown distribution field '{unknown[0]}'{did_you_mean(str(unknown[0]), DISTRIBUTION_KINDS)};"
            f" use one of {', '.join(DISTRIBUTION_KINDS)}"
        )
    if len(kinds) != 1:
        raise SpaceError(f"{where}: give exactly one of {', '.join(DISTRIBUTION_KINDS)}, got {sorted(raw)}")
    kind = kinds[0]
    arg = raw[kind]
    step, log = raw.get("step"), raw.get("log", False)
    if step is not None and kind not in ("uniform", "int"):
        raise SpaceError(f"{where}: 'step' only applies to uniform and int distributions")
    if "log" in raw and kind != "int":
        raise SpaceError(f"{where}: 'log' only applies to int distributions (use loguniform for floats)")
    if kind == "fixed":
        return Distribution("fixed", value=arg)
    if kind == "choice":
        if not isinstance(arg, (list, tuple)) or not arg:
            raise SpaceError(f"{where}: choice needs a non-empty list, got {arg!r}")
        bad = [c for c in arg if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            raise SpaceError(f"{where}: choices must be numbers, strings or booleans, got {bad[0]!r}")
        if len(set(map(repr, arg))) != len(arg):
            raise SpaceError(f"{where}: choices repeat a value: {list(arg)}")
        return Distribution("choice", choices=tuple(arg))
    if not isinstance(arg, (list, tuple)) or len(arg) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in arg):
        raise SpaceError(f"{where}: {kind} needs two numbers [low, high], got {arg!r}")
    low, high = arg
    if not low < high:
        raise SpaceError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {low}")
    if kind == "int":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SpaceError(f"{where}: int bounds must be integers, got [{low}, {high}]")
        if step is not None and (not float(step).is_integer() or step < 1):
            raise SpaceError(f"{where}: int step must be a positive integer, got {step}")
        if log and (low < 1 or (step or 1) != 1):
            raise SpaceError(f"{where}: a log int distribution needs low >= 1 and step 1")
        if step is not None and (high - low) % step:
            raise SpaceError(f"{where}: int range [{low}, {high}] is not a multiple of step {step}")
        return Distribution("int", low=int(low), high=int(high), step=int(step) if step is not None else None, log=bool(log))
    if step is not None and (step <= 0 or not math.isclose(round((high - low) / step) * step, high - low)):
        raise SpaceError(f"{where}: uniform step {step} must be > 0 and divide [{low}, {high}]")
    return Distribution(kind, low=float(low), high=float(high), step=float(step) if step is not None else None)


# ----------------------------------------------------------------------------------------------
# scheduler, sampler, resources


@dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping at step boundaries. ``asha`` uses ``step`` (completed steps) as time."""

    type: str = "asha"  # asha | fifo
    grace_period: int = 2  # steps every trial runs before it can be stopped (>= 2: old classes met)
    reduction_factor: float = 2.0  # ASHA keeps the top 1/reduction_factor at each rung
    brackets: int = 1


@dataclass(frozen=True)
class SamplerSpec:
    """How Optuna proposes configurations."""

    type: str = "tpe"  # tpe | random | grid | nsga2 (multi-objective; tpe handles several objectives too)
    seed: int | None = 0
    n_startup_trials: int = 10  # tpe: random trials before the model kicks in


# Custom resource offered by the head of the shipped clusters (cluster/*.yaml) for trial drivers.
DRIVER_RESOURCE = "contavsep_driver"


@dataclass(frozen=True)
class Resources:
    """Resources of one trial: ``workers`` Ray Train workers with ``cpus``/``gpus`` each, plus a
    Tune driver that holds ``driver_cpus`` (a fraction, so a driver never blocks its own workers)."""

    workers: int = 1  # Train workers (DDP ranks; > 1 splits each batch across them)
    cpus: float = 1.0  # logical CPUs per worker
    gpus: float = 0.0  # GPUs per worker; a fraction < 1 packs several trials on one GPU
    driver_cpus: float = 0.1  # the Tune trial's driver process (it only launches the workers)
    max_concurrent: int = 0  # trials at once; 0 = as many as the cluster's resources fit now (set it for autoscaling clusters)

    @property
    def trial_cpus(self) -> float:
        return self.workers * self.cpus + self.driver_cpus

    @property
    def trial_gpus(self) -> float:
        return self.workers * self.gpus

    def driver_resources(self, cluster: Mapping[str, float]) -> dict[str, float]:
        """What a trial's Tune driver holds: on clusters whose head offers the custom resource
        ``contavsep_driver`` (cluster/*.yaml) the driver lives there and holds no CPU, so a GPU
        node's preemption never kills a driver; elsewhere a fraction of a CPU."""
        if cluster.get(DRIVER_RESOURCE, 0.0) > 0:
            return {"cpu": 0.0, DRIVER_RESOURCE: self.driver_cpus}
        return {"cpu": self.driver_cpus}

    def concurrent_trials(self, cluster: Mapping[str, float]) -> int:
        """How many trials run at once in ``cluster`` (e.g. ``ray.cluster_resources()``, or the
        autoscaler's maximum for an autoscaling cluster).

        ``max_concurrent`` if set. Otherwise the limiting resource decides: floor(cluster GPUs /
        trial GPUs) when trials use GPUs, floor(cluster CPUs / trial CPUs), and with a driver
        resource floor(drivers / driver share). Raises :class:`SpaceError` if not even one trial fits.
        """
        if self.max_concurrent > 0:
            return self.max_concurrent
        fits = []
        on_head = cluster.get(DRIVER_RESOURCE, 0.0) > 0
        trial_cpus = self.workers * self.cpus if on_head else self.trial_cpus
        needs = [("CPU", trial_cpus), ("GPU", self.trial_gpus)] + ([(DRIVER_RESOURCE, self.driver_cpus)] if on_head else [])
        for name, need in needs:
            if need > 0:
                have = float(cluster.get(name, 0.0))
                fits.append(int(math.floor(have / need + 1e-9)))  # 2 / (0.9 + 0.1) is 2, not 1.999...
                if fits[-1] < 1:
                    raise SpaceError(
                        f"one trial needs {need:g} {name} ({self.workers} worker(s) x {self.cpus:g} CPU"
                        f" / {self.gpus:g} GPU + {self.driver_cpus:g} driver CPU) but the Ray cluster has {have:g};"
                        f" lower resources.* in the space or use a bigger cluster"
                    )
        return min(fits)


@dataclass(frozen=True)
class RepeatSpec:
    """Every configuration runs on ``seeds`` x ``class_orders`` repeats (separate Ray trials).

    Seed ``s`` sets ``train.seed = base seed + s``. With several class orders, order 0 is the
    dataset's (the paper's) order and order ``o > 0`` shuffles it with ``data.seed = o``.
    """

    seeds: int = 1  # training seeds per configuration
    class_orders: int = 1  # class orders per configuration (1 = the dataset's order only)
    first_seed: int = 0  # seed offset of the first repeat (a confirmation stage starts after the search's seeds)

    @property
    def count(self) -> int:
        return self.seeds * self.class_orders

    def keys(self) -> tuple[str, ...]:
        """The config keys a repeat sets."""
        return REPEAT_CONFIG_KEYS if self.class_orders > 1 else REPEAT_CONFIG_KEYS[:1]

    def members(self, base_seed: int = 0) -> dict[str, dict[str, Any]]:
        """``{label: dotted overrides}`` of every repeat, e.g. ``{"s0-o0": {"train.seed": 0, ...}}``
        (label ``s<k>``: seed ``base_seed + k``, k counted from ``first_seed``)."""
        out: dict[str, dict[str, Any]] = {}
        for o in range(self.class_orders):
            for s in range(self.first_seed, self.first_seed + self.seeds):
                values: dict[str, Any] = {"train.seed": base_seed + s}
                if self.class_orders > 1:
                    values.update({"data.shuffle_classes": o > 0, "data.seed": o})
                out[f"s{s}-o{o}"] = values
        return out


@dataclass(frozen=True)
class ConfirmSpec:
    """The confirmation stage: after the search, the best configuration of each method by the
    validation objective (a multi-objective space: its validation Pareto set, at most
    ``max_pareto``) runs again on ``seeds`` fresh seeds (after the search's), with the search's
    class orders; only these runs' test numbers are ranked and published."""

    seeds: int = 0  # fresh seeds per chosen configuration (0: no confirmation stage)
    max_pareto: int = 4  # multi-objective spaces: confirm at most this many Pareto configurations


@dataclass(frozen=True)
class ProtocolSpec:
    """What the search sees of the task stream. ``full_stream``: every task (the default).
    ``first_tasks``: only the first ``tasks`` tasks (hyperparameters a real continual learner
    could choose, Lee et al. 2024), the winner frozen and run on the full stream in the
    confirmation stage."""

    type: str = "full_stream"  # full_stream | first_tasks
    tasks: int = 2  # first_tasks: tasks the search trains (2: the first step with old classes)


@dataclass(frozen=True)
class Objective:
    metric: str = "sdr"  # a value of the last step's result (see OBJECTIVES / FINAL_OBJECTIVES), split named
    mode: str = "max"  # max | min

    @property
    def key(self) -> str:
        """Its key in trial results (:func:`result_key`)."""
        return result_key(self.metric)


# ----------------------------------------------------------------------------------------------
# the space


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the file format)."""

    name: str
    base: dict[str, Any]  # fixed dotted keys shared by all trials ({storage} already substituted)
    strategies: dict[str, dict[str, Distribution]]  # strategy -> dotted key -> distribution (common merged in)
    metric: str = "sdr"
    mode: str = "max"
    num_samples: int = 1
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 0
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    experiment: str = ""  # MLflow experiment ("" = name)
    description: str = ""
    num_steps: int = 0  # data.num_steps of every trial (ASHA's max_t)
    repeats: RepeatSpec = field(default_factory=RepeatSpec)
    extra_objectives: tuple[Objective, ...] = ()  # objectives after (metric, mode)
    source_text: str = ""  # the YAML as written (an MLflow artifact of the sweep)
    select_on: str = "val"  # the split objectives and pruning read: val | test (optimistic, on request)
    factors: tuple[str, ...] = ()  # config keys that are table rows (part of the method)
    confirm: ConfirmSpec = field(default_factory=ConfirmSpec)
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    stream_steps: int = 0  # data.num_steps of the full stream (num_steps is the search's: fewer with first_tasks)

    @property
    def metric_key(self) -> str:
        """The first objective's key in trial results (what ASHA and Optuna read)."""
        return result_key(self.metric)

    @property
    def publish_metric(self) -> str:
        """The test value a table ranks and publishes (the first objective's, on test)."""
        return f"test/{base_metric(self.metric)}"

    def selection_text(self, confirmed_runs: int | None = None) -> str:
        """What a table's configurations were chosen on, in words (:func:`selection_text`)."""
        first = self.protocol.tasks if self.protocol.type == "first_tasks" else 0
        return selection_text(self.selection, first_tasks=first, confirmed_runs=confirmed_runs)

    @property
    def method_keys(self) -> tuple[str, ...]:
        """The keys that make a method (besides the strategy): memory size and the factors."""
        return tuple(dict.fromkeys((*METHOD_KEYS, *self.factors)))

    @property
    def selects(self) -> bool:
        """Whether the sweep chooses among configurations of a method: some strategy searches a
        key that is not part of the method (spaces that enumerate each method once do not)."""
        return any(not d.is_fixed and k not in self.method_keys for params in self.strategies.values() for k, d in params.items())

    @property
    def confirms(self) -> bool:
        return self.selects and self.confirm.seeds > 0

    @property
    def selection(self) -> str:
        """``none`` (nothing chosen), ``val`` or ``test``: what every table says it was chosen on."""
        return self.select_on if self.selects else "none"

    def method_of(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The factor values of a trial's parameters (a factor fixed by the strategy or base included)."""
        cfg = flat(self.trial_config(params)) if self.factors else {}
        return {k: cfg[k] for k in self.factors}

    def stage(self, name: str) -> SearchSpace:
        """The space a stage's trials run: ``search`` (the stream cut to its first tasks under
        ``first_tasks``) or ``confirm`` (the full stream, fresh seeds after the search's, FIFO)."""
        if name == "search":
            if self.protocol.type != "first_tasks":
                return self
            k = self.protocol.tasks
            return replace(self, base={**self.base, "data.num_steps": k}, num_steps=k)
        if name == "confirm":
            repeats = RepeatSpec(self.confirm.seeds, self.repeats.class_orders, self.repeats.first_seed + self.repeats.seeds)
            return replace(self, repeats=repeats, scheduler=SchedulerSpec(type="fifo"), num_steps=self.stream_steps)
        raise ValueError(f"unknown stage {name!r}")
    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """(metric, mode) first (reported at every step: the one pruning judges), then the others."""
        return (Objective(self.metric, self.mode), *self.extra_objectives)

    def repeat_members(self) -> dict[str, dict[str, Any]]:
        """Every repeat's dotted overrides (seeds count up from base ``train.seed``)."""
        return self.repeats.members(int(self.base.get("train.seed", 0)))

    @property
    def num_trials(self) -> int:
        """Ray trials of the whole sweep: configurations x repeats."""
        return self.num_samples * self.repeats.count

    def trial_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The dotted overrides of one trial: base, then the strategy's fixed values, then ``params``
        (the sampled values, ``strategy.name`` included)."""
        strategy = params.get(STRATEGY_KEY)
        if strategy not in self.strategies:
            raise SpaceError(f"trial parameters name strategy {strategy!r}, not one of {sorted(self.strategies)}")
        fixed = {k: d.value for k, d in self.strategies[strategy].items() if d.is_fixed}
        sampled = {k: v for k, v in params.items() if k not in (GROUP_KEY, REPEAT_KEY)}
        return {**self.base, **fixed, **sampled}

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        return make_config("paper", self.trial_overrides(params))

    def grid(self) -> dict[str, list[Any]]:
        """The full grid for ``sampler: grid`` (every strategy must search the same choice keys)."""
        keys = None
        grid: dict[str, list[Any]] = {STRATEGY_KEY: list(self.strategies)}
        for name, params in self.strategies.items():
            searched = {k: d for k, d in params.items() if not d.is_fixed}
            bad = [k for k, d in searched.items() if d.kind != "choice"]
            if bad:
                raise SpaceError(f"sampler grid: strategy {name} searches {bad[0]} with {searched[bad[0]].describe()}; a grid needs choice")
            if keys is None:
                keys = set(searched)
            elif set(searched) != keys:
                raise SpaceError(f"sampler grid: every strategy must search the same keys ({sorted(keys)}), {name} searches {sorted(searched)}")
            for k, d in searched.items():
                if k in grid and grid[k] != list(d.choices):
                    raise SpaceError(f"sampler grid: {k} has different choices in different strategies")
                grid[k] = list(d.choices)
        return grid

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def with_overrides(self, overrides: Mapping[str, Any]) -> SearchSpace:
        """This space with ``--set`` values fixed for every trial (a searched key becomes fixed)."""
        if not overrides:
            return self
        if STRATEGY_KEY in overrides:
            raise SpaceError(f"--set {STRATEGY_KEY}=...: choose strategies in the space's 'strategies' section")
        base = {**self.base, **overrides}
        strategies = {s: {k: d for k, d in params.items() if k not in overrides} for s, params in self.strategies.items()}
        points = tuple({k: v for k, v in p.items() if k not in overrides} for p in self.points_to_evaluate)
        return validate_space(replace(self, base=base, strategies=strategies, points_to_evaluate=points))


class DefineByRun:
    """The Optuna define-by-run function of a space (a picklable object: Tune checkpoints it).

    Called with an Optuna trial: suggests ``strategy.name`` first, then that strategy's
    parameters; returns the strategy's fixed values (Ray merges them into the trial config).
    """

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        strategy = trial.suggest_categorical(STRATEGY_KEY, list(self.space.strategies))
        fixed: dict[str, Any] = {}
        for key, dist in self.space.strategies[strategy].items():
            if dist.is_fixed:
                fixed[key] = dist.value
            else:
                dist.suggest(trial, key)
        return fixed


# ----------------------------------------------------------------------------------------------
# loading and validation


_Section = TypeVar("_Section", bound="DataclassInstance")


def _section(raw: Any, where: str, cls: type[_Section], aliases: Mapping[str, str] | None = None) -> _Section:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{where} must be a mapping, got {raw!r}")
    names = list(cls.__dataclass_fields__)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        key = (aliases or {}).get(key, key)
        if key not in names:
            raise SpaceError(f"{where}: unknown field '{key}'{did_you_mean(str(key), names)}; valid: {', '.join(names)}")
        f = cls.__dataclass_fields__[key]
        default = f.default
        if value is None and "None" in str(f.type):
            kwargs[key] = None
        elif isinstance(default, bool):
            kwargs[key] = value
        elif isinstance(default, int) and not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer():
            kwargs[key] = int(value)
        elif isinstance(default, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
            kwargs[key] = float(value)
        elif isinstance(default, str) and isinstance(value, str):
            kwargs[key] = value
        else:
            raise SpaceError(f"{where}.{key}: expected {type(default).__name__}, got {value!r}")
    return cls(**kwargs)


# Not a suggestion but a classification (is this mapping a distribution?), so stricter than
# contavsep.suggest's cutoff: a section key taken for a distribution field would be refused.
_DISTRIBUTION_LIKENESS = 0.8


def _looks_like_distribution(key: str) -> bool:
    close = difflib.get_close_matches(key, DISTRIBUTION_KINDS, n=1, cutoff=_DISTRIBUTION_LIKENESS)
    return key in DISTRIBUTION_KINDS + ("step", "log") or bool(close)


def _dotted(raw: Any, where: str) -> dict[str, Any]:
    """Flatten a mapping of nested and/or dotted keys (like config YAML overlays)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{where} must be a mapping of dotted keys, got {raw!r}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise SpaceError(f"{where}: keys must be strings, got {key!r}")
        # A mapping is a nested section unless it is a distribution ({uniform: ...}, or a
        # misspelt one such as {loguniformm: ...}, which parse_distribution then names).
        if isinstance(value, Mapping) and not any(_looks_like_distribution(str(k)) for k in value):
            for sub, sub_value in _dotted(value, f"{where}.{key}").items():
                out[f"{key}.{sub}"] = sub_value
        else:
            out[key] = value
    return out


def _check_key(key: str, where: str) -> None:
    keys = valid_keys()
    if key not in keys:
        raise SpaceError(f"{where}: unknown config key '{key}'{did_you_mean(key, keys)}; see `contavsep config --keys`")


def parse_space(text: str, *, source: str = "<space>", storage_uri: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """Parse and validate a space from YAML text; ``overrides`` are ``--set`` values."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{source} is not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{source} must hold a mapping with at least 'base' and 'strategies'")
    unknown = [k for k in raw if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise SpaceError(f"{source}: unknown section '{unknown[0]}'{did_you_mean(str(unknown[0]), TOP_LEVEL_KEYS)}; valid: {', '.join(TOP_LEVEL_KEYS)}")
    if not raw.get("strategies"):
        raise SpaceError(f"{source}: 'strategies' must name at least one strategy, e.g. strategies: {{contavsep: {{}}}}")

    base = _dotted(raw.get("base"), f"{source}: base")
    for key, value in base.items():
        if isinstance(value, Mapping):
            raise SpaceError(f"{source}: base.{key} is fixed for all trials; move distributions into a strategy (or 'common')")
        if isinstance(value, str) and STORAGE_PLACEHOLDER in value:
            if storage_uri is None:
                raise SpaceError(f"{source}: base.{key} uses {STORAGE_PLACEHOLDER} but no storage root is configured")
            base[key] = value.replace(STORAGE_PLACEHOLDER, storage_uri.rstrip("/"))
    common = {k: parse_distribution(v, f"{source}: common.{k}") for k, v in _dotted(raw.get("common"), f"{source}: common").items()}
    strategies_raw = raw["strategies"]
    if isinstance(strategies_raw, list):  # a plain list of names: each with the common space only
        strategies_raw = {name: {} for name in strategies_raw}
    if not isinstance(strategies_raw, Mapping):
        raise SpaceError(f"{source}: 'strategies' must map strategy names to their distributions")
    strategies: dict[str, dict[str, Distribution]] = {}
    for name, params in strategies_raw.items():
        own = {k: parse_distribution(v, f"{source}: strategies.{name}.{k}") for k, v in _dotted(params, f"{source}: strategies.{name}").items()}
        strategies[str(name)] = {**common, **own}

    points_raw = raw.get("points_to_evaluate") or []
    if points_raw == "paper_defaults":
        points = tuple({STRATEGY_KEY: s} for s in strategies)
    elif isinstance(points_raw, list) and all(isinstance(p, Mapping) for p in points_raw):
        points = tuple(_dotted(p, f"{source}: points_to_evaluate") for p in points_raw)
    else:
        raise SpaceError(f"{source}: points_to_evaluate must be 'paper_defaults' or a list of mappings of dotted keys")

    def number(key: str, default: Any, kind: type) -> Any:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
            raise SpaceError(f"{source}: {key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
        return kind(value)

    extra_objectives: tuple[Objective, ...] = ()
    metric, mode = raw.get("metric", "sdr"), raw.get("mode", "max")
    if "objectives" in raw:
        listed = raw["objectives"]
        if "metric" in raw or "mode" in raw:
            raise SpaceError(f"{source}: give either metric/mode or objectives, not both (objectives' first entry is the metric)")
        if not isinstance(listed, list) or not listed or not all(isinstance(o, Mapping) for o in listed):
            raise SpaceError(f"{source}: objectives must be a list of {{metric: NAME, mode: max|min}}")
        parsed = [_section(o, f"{source}: objectives[{i}]", Objective) for i, o in enumerate(listed)]
        metric, mode = parsed[0].metric, parsed[0].mode
        extra_objectives = tuple(parsed[1:])

    select_on = raw.get("select_on", "val")
    if select_on not in SPLITS:
        raise SpaceError(f"{source}: select_on must be 'val' (default) or 'test' (optimistic, only on request), got {select_on!r}")
    metric = named_metric(str(metric), select_on)
    extra_objectives = tuple(replace(o, metric=named_metric(o.metric, select_on)) for o in extra_objectives)
    factors_raw = raw.get("factors") or []
    if not isinstance(factors_raw, list) or not all(isinstance(f, str) for f in factors_raw):
        raise SpaceError(f"{source}: factors must be a list of dotted config keys, e.g. factors: [model.name]")
    protocol_raw = raw.get("protocol")
    if isinstance(protocol_raw, str):
        protocol_raw = {"type": protocol_raw}

    num_samples = number("num_samples", 0, int)
    if "num_samples" in raw and num_samples < 1:  # 0 below means "not given", never "no trials"
        raise SpaceError(f"{source}: num_samples must be >= 1, got {num_samples} (leave it out for the grid size or"
                         f" one trial per starting point)")
    name = raw.get("name") or Path(source).stem
    space = SearchSpace(
        name=str(name),
        description=str(raw.get("description") or ""),
        experiment=str(raw.get("experiment") or ""),
        base=base,
        strategies=strategies,
        metric=str(metric),
        mode=str(mode),
        extra_objectives=extra_objectives,
        repeats=_section(raw.get("repeats"), f"{source}: repeats", RepeatSpec),
        num_samples=num_samples,
        scheduler=_section(raw.get("scheduler"), f"{source}: scheduler", SchedulerSpec),
        sampler=_section(raw.get("sampler"), f"{source}: sampler", SamplerSpec),
        resources=_section(raw.get("resources"), f"{source}: resources", Resources),
        max_failures=number("max_failures", 0, int),
        points_to_evaluate=points,
        source_text=text,
        select_on=str(select_on),
        factors=tuple(factors_raw),
        confirm=_section(raw.get("confirm"), f"{source}: confirm", ConfirmSpec),
        protocol=_section(protocol_raw, f"{source}: protocol", ProtocolSpec),
    )
    space = validate_space(space, source)
    return space.with_overrides(dict(overrides)) if overrides else space


# Keys of a space that may change between a sweep and its --resume: where the data lives (its
# content is compared by hash instead), where results go, what the cluster offers, and the
# speed-only keys (same results up to float rounding: a sweep started on CPUs may resume on GPUs).
_RESUMABLE_KEYS = ("base.data.uri", "base.data.cache_dir", *(f"base.{k}" for k in SPEED_KEYS))


def fingerprint(space: SearchSpace) -> dict[str, str]:
    """What defines a sweep's trials, as {dotted key: text}: stored with the sweep so that a
    ``--resume`` with another space (or ``--set``) is refused naming the keys that differ."""
    # The resolved config of the base: a value from the YAML (3) and from --set ('3') are one value.
    out = {f"base.{k}": repr(v) for k, v in flat(_build_base(space.base, "base")).items() if not _is_strategy_key(k)}
    # base's strategy keys, typed as every strategy of the space reads them (validate_space checked they all have them)
    own = [k for k in space.base if _is_strategy_key(k)]
    if own:
        typed = flat(_build({**space.base, STRATEGY_KEY: next(iter(space.strategies))}, "base"))
        out.update({f"base.{k}": repr(typed[k]) for k in own})
    for name, params in space.strategies.items():
        out[f"strategies.{name}"] = "(searched)"
        out.update({f"strategies.{name}.{k}": d.describe() for k, d in params.items()})
    out.update({
        "num_samples": str(space.num_samples),
        "objectives": ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives),
        "repeats": f"{space.repeats.seeds} seeds x {space.repeats.class_orders} class orders"
                   + (f" from seed {space.repeats.first_seed}" if space.repeats.first_seed else ""),
        "scheduler": repr(space.scheduler),
        "sampler": repr(space.sampler),
        "points_to_evaluate": repr(space.points_to_evaluate),
        "select_on": space.select_on,
        "factors": ", ".join(space.factors),
        "confirm": repr(space.confirm),
        "protocol": repr(space.protocol),
    })
    return {k: v for k, v in out.items() if k not in _RESUMABLE_KEYS}


def fingerprint_differences(stored: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The keys whose value differs between two fingerprints (missing on one side counts), each
    as ``key: stored -> now``."""
    missing = "(not set)"
    # a fingerprint stored by an older version may hold keys that are resumable or retired now
    ignored = set(_RESUMABLE_KEYS) | {f"base.{k}" for k in RETIRED_KEYS}
    # ... and may lack keys added since, which meant the value in effect then
    stored = {**{f"base.{k}": repr(v) for k, v in LEGACY_DEFAULTS.items()}, **stored}
    # ... and, written before each strategy declared its own keys, holds the default strategy's
    # keys at their defaults (what the base did not set): those were never the base's
    legacy = {f"base.{k}": repr(v) for k, v in {**LEGACY_STRATEGY_DEFAULTS, STRATEGY_KEY: "contavsep"}.items()}
    stored = {k: v for k, v in stored.items() if k in now or legacy.get(k) != v}
    return [f"{k}: {stored.get(k, missing)} -> {now.get(k, missing)}"
            for k in sorted(set(stored) | set(now)) if k not in ignored and stored.get(k) != now.get(k)]


def load_space(path: str | Path, *, storage_uri: str | None = None, overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """Read and validate the space file at ``path`` (``--set`` values in ``overrides``)."""
    p = Path(path)
    if not p.is_file():
        shipped = sorted(q.name for q in (Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))
        hint = f"; shipped spaces: {', '.join('search_spaces/' + s for s in shipped)}" if shipped else ""
        raise FileNotFoundError(f"search space {p} does not exist{hint}")
    return parse_space(p.read_text(), source=str(p), storage_uri=storage_uri, overrides=overrides)


def _build(overrides: Mapping[str, Any], where: str) -> Config:
    try:
        return make_config("paper", overrides)
    except ConfigError as exc:
        raise SpaceError(f"{where}: {exc}") from None


def _is_strategy_key(key: str) -> bool:
    return key.startswith("strategy.") and key != STRATEGY_KEY


def _build_base(base: Mapping[str, Any], where: str) -> Config:
    """The base's config without its strategy keys: those belong to each strategy of the space,
    and are checked when each strategy's config is built (with the strategy's own Params)."""
    return _build({k: v for k, v in base.items() if not _is_strategy_key(k)}, where)


def validate_space(space: SearchSpace, source: str = "<space>") -> SearchSpace:
    """Check every key, strategy, bound, choice and setting; return the space with
    ``num_steps`` filled in and starting points completed. Raises :class:`SpaceError`."""
    from contavsep.registry import STRATEGIES, RegistryError

    where = source if source != "<space>" else f"space {space.name}"
    for key in space.base:
        if key == STRATEGY_KEY:
            raise SpaceError(f"{where}: base must not set {STRATEGY_KEY}; list strategies under 'strategies'")
        if key != "preset":
            _check_key(key, f"{where}: base")
    base_cfg = _build_base(space.base, f"{where}: base")
    if base_cfg.model.weights:  # every trial would fail on a missing file: refuse it before any starts
        from contavsep.models.weights_file import WeightsError, weights_path

        try:
            weights_path(base_cfg.model.weights)
        except WeightsError as exc:
            raise SpaceError(f"{where}: base: {exc}") from None
    if not base_cfg.data.uri:
        raise SpaceError(f"{where}: base must set data.uri (a dataset URI, or \"{STORAGE_PLACEHOLDER}/datasets/<name>\"); or pass --set data.uri=...")
    from contavsep.storage import StorageError, parse_uri

    try:
        parse_uri(base_cfg.data.uri)  # a malformed URI fails here, not in every trial
    except StorageError as exc:
        raise SpaceError(f"{where}: data.uri: {exc}") from None
    for name, params in space.strategies.items():
        try:
            STRATEGIES.check(name)
        except RegistryError as exc:
            raise SpaceError(f"{where}: strategies: {exc}") from None
        for key in params:
            _check_key(key, f"{where}: strategies.{name}")
            if key in UNSEARCHABLE and not params[key].is_fixed:
                raise SpaceError(f"{where}: strategies.{name} searches {key}, but {UNSEARCHABLE[key]}")
            if key in BASE_ONLY:
                raise SpaceError(f"{where}: strategies.{name} sets {key}; {UNSEARCHABLE[key]}")
        fixed = {k: d.value for k, d in params.items() if d.is_fixed}
        searched = {k: d for k, d in params.items() if not d.is_fixed}
        overrides = {**space.base, STRATEGY_KEY: name, **fixed}
        _build(overrides, f"{where}: strategies.{name}")
        for key, dist in searched.items():  # each bound / choice alone, with the others at base
            for value in dist.corner_values():
                _build({**overrides, key: value}, f"{where}: strategies.{name}.{key} = {value!r}")
        for corner in (0, -1):  # all lower bounds together, all upper bounds together
            together = {k: d.corner_values()[corner] for k, d in searched.items()}
            if len(together) > 1:
                _build({**overrides, **together}, f"{where}: strategies.{name} with every parameter at its {'lower' if corner == 0 else 'upper'} bound")

    # One Optuna parameter per key: its kind (and choices) must agree across strategies.
    seen: dict[str, tuple[str, Distribution]] = {}
    for name, params in space.strategies.items():
        for key, dist in params.items():
            if dist.is_fixed:
                continue
            if key in seen:
                other_name, other = seen[key]
                if dist.kind != other.kind or dist.log != other.log or dist.choices != other.choices:
                    raise SpaceError(
                        f"{where}: {key} is searched as {other.describe()} by {other_name} and as {dist.describe()} by {name};"
                        f" one Optuna parameter needs one kind of distribution (same log scale, same choices; ranges may differ)"
                    )
            else:
                seen[key] = (name, dist)

    first = base_metric(space.metric)
    if first not in OBJECTIVES:
        raise SpaceError(f"{where}: metric '{first}'{did_you_mean(first, OBJECTIVES)} is not reported at every step; use one of {', '.join(OBJECTIVES)}")
    for objective in space.objectives:
        name = base_metric(objective.metric)
        if name not in FINAL_OBJECTIVES:
            raise SpaceError(f"{where}: objective '{name}'{did_you_mean(name, FINAL_OBJECTIVES)} is not a result value; use one of {', '.join(FINAL_OBJECTIVES)}")
        split = split_of(objective.metric)
        if split is not None and split != space.select_on:
            if split == "test":
                raise SpaceError(f"{where}: objective '{objective.metric}' selects on the test split, whose numbers the sweep"
                                 f" publishes (optimistic); write '{name}' (validation), or add 'select_on: test' to say so")
            raise SpaceError(f"{where}: objective '{objective.metric}' reads validation but the space says select_on: {space.select_on};"
                             f" write '{name}' or drop select_on")
        if objective.mode not in ("max", "min"):
            raise SpaceError(f"{where}: mode of {objective.metric} must be 'max' or 'min', got '{objective.mode}'")
    if len({o.metric for o in space.objectives}) != len(space.objectives):
        raise SpaceError(f"{where}: objectives repeat a metric: {[o.metric for o in space.objectives]}")
    if space.select_on == "val" and not base_cfg.eval.validate:
        raise SpaceError(f"{where}: base sets eval.validate=false, but the space selects on validation; drop eval.validate"
                         f" (or add 'select_on: test', which is optimistic)")
    if base_cfg.eval.val_metrics == "sdr":
        for objective in space.objectives:
            if split_of(objective.metric) == "val" and _scores_beyond_sdr(objective.metric):
                raise SpaceError(f"{where}: objective '{objective.metric}' needs SIR/SAR on validation, which is scored for SDR"
                                 f" only by default; add 'eval.val_metrics: all' to base")
    for key in space.factors:
        _check_key(key, f"{where}: factors")
        if key in UNSEARCHABLE or key in METHOD_KEYS:
            raise SpaceError(f"{where}: factors: {key} cannot be a factor ({UNSEARCHABLE.get(key, 'it is part of every method already')})")
        for name, params in space.strategies.items():
            if key in params and params[key].kind not in ("choice", "fixed"):
                raise SpaceError(f"{where}: factor {key} is searched by {name} as {params[key].describe()}; a factor is a"
                                 f" table row: give it a choice (or a fixed value)")
    if len(set(space.factors)) != len(space.factors):
        raise SpaceError(f"{where}: factors repeat a key: {list(space.factors)}")
    conf = space.confirm
    if conf.seeds < 0 or conf.max_pareto < 1:
        raise SpaceError(f"{where}: confirm needs seeds >= 0 and max_pareto >= 1, got {conf.seeds} and {conf.max_pareto}")
    if conf.seeds and not space.selects:
        raise SpaceError(f"{where}: confirm: the space makes no selection (it searches only {', '.join(space.method_keys)}:"
                         f" every configuration is a method of its own), so there is nothing to confirm; drop confirm"
                         f" (raise repeats.seeds for tighter intervals)")
    proto = space.protocol
    if proto.type not in PROTOCOLS:
        raise SpaceError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got '{proto.type}'{did_you_mean(proto.type, PROTOCOLS)}")
    if proto.type == "first_tasks":
        if not FIRST_STEP_WITH_OLD_CLASSES <= proto.tasks < base_cfg.data.num_steps:
            raise SpaceError(f"{where}: protocol first_tasks needs {FIRST_STEP_WITH_OLD_CLASSES} <= tasks < data.num_steps"
                             f" ({base_cfg.data.num_steps}), got {proto.tasks}: the search must meet old classes, and see"
                             f" less than the whole stream")
        if not conf.seeds:
            raise SpaceError(f"{where}: protocol first_tasks searches on the first {proto.tasks} tasks only, so only a"
                             f" confirmation gives full-stream numbers; add confirm: {{seeds: 3}}")
    rep = space.repeats
    if rep.seeds < 1 or rep.class_orders < 1 or rep.first_seed < 0:
        raise SpaceError(f"{where}: repeats need seeds >= 1, class_orders >= 1 and first_seed >= 0, got {rep.seeds},"
                         f" {rep.class_orders} and {rep.first_seed}")
    if rep.class_orders > 1 and "data.shuffle_classes" in space.base:
        raise SpaceError(f"{where}: base sets data.shuffle_classes but repeats.class_orders chooses the orders; drop one")
    sch = space.scheduler
    if sch.type not in ("asha", "fifo"):
        raise SpaceError(f"{where}: scheduler.type must be asha or fifo, got '{sch.type}'{did_you_mean(sch.type, ('asha', 'fifo'))}")
    num_steps = base_cfg.data.num_steps
    search_steps = proto.tasks if proto.type == "first_tasks" else num_steps
    if sch.type == "asha":
        if sch.grace_period < FIRST_STEP_WITH_OLD_CLASSES:
            raise SpaceError(
                f"{where}: scheduler.grace_period {sch.grace_period} would stop trials after step {sch.grace_period}, before any"
                f" strategy has met an old class; use grace_period >= {FIRST_STEP_WITH_OLD_CLASSES} (or scheduler: {{type: fifo}})"
            )
        if not (sch.grace_period <= search_steps and sch.reduction_factor > 1 and sch.brackets >= 1):
            raise SpaceError(f"{where}: scheduler needs grace_period <= the steps the search trains ({search_steps}),"
                             f" reduction_factor > 1, brackets >= 1")
    smp = space.sampler
    samplers = ("tpe", "random", "grid", "nsga2")
    if smp.type not in samplers:
        raise SpaceError(f"{where}: sampler.type must be one of {', '.join(samplers)}, got '{smp.type}'{did_you_mean(smp.type, samplers)}")
    res = space.resources
    if res.workers < 1 or res.cpus < 0 or res.gpus < 0 or res.driver_cpus <= 0 or res.max_concurrent < 0:
        raise SpaceError(f"{where}: resources need workers >= 1, cpus >= 0, gpus >= 0, driver_cpus > 0, max_concurrent >= 0")
    if res.cpus == 0 and res.gpus == 0:
        raise SpaceError(f"{where}: resources: a worker needs some cpus or gpus")
    if res.gpus > 1 and not float(res.gpus).is_integer():
        raise SpaceError(f"{where}: resources.gpus above 1 must be a whole number (Ray shares a GPU only in fractions below 1), got {res.gpus}")
    if base_cfg.train.device.startswith("cuda") and res.gpus == 0:  # Ray hides every GPU from such a trial
        raise SpaceError(f"{where}: train.device={base_cfg.train.device} but resources.gpus is 0, so no trial would see a GPU;"
                         f" set resources.gpus (e.g. 1) or train.device=auto")
    if base_cfg.train.batch_size % res.workers:
        raise SpaceError(f"{where}: train.batch_size ({base_cfg.train.batch_size}) must be divisible by resources.workers ({res.workers})")
    if space.max_failures < 0:
        raise SpaceError(f"{where}: max_failures must be >= 0")

    points = tuple(_complete_point(space, p, base_cfg, where) for p in space.points_to_evaluate)
    num_samples = space.num_samples
    if smp.type == "grid":
        num_samples = num_samples or space.grid_size()
        if points:
            raise SpaceError(f"{where}: a grid sampler visits every point; drop points_to_evaluate")
    num_samples = num_samples or max(1, len(points))  # not given: one trial, or one per starting point
    if num_samples < 1:
        raise SpaceError(f"{where}: num_samples must be >= 1")
    if len(points) > num_samples:
        raise SpaceError(f"{where}: {len(points)} points_to_evaluate but num_samples is {num_samples}; raise num_samples")
    return replace(space, num_steps=num_steps, stream_steps=num_steps, num_samples=num_samples, points_to_evaluate=points)


def rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """Completed-step counts where groups are judged: ``grace x rf^k < max_t``."""
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(int(t))
        t *= reduction_factor
    return sorted(set(out))


def space_notes(space: SearchSpace) -> list[str]:
    """What a user should know before the sweep runs (``sweep --check`` prints these, the sweep
    logs them): the selection, the protocol, a scheduler that can never prune."""
    notes = []
    search = space.stage("search")
    if not space.selects:
        notes.append(f"selection: none; every configuration is a method of its own ({', '.join(('strategy', *space.method_keys))}),"
                     f" so the table reports every run's test numbers")
    else:
        what = {"val": "validation (optimistic only by the noise of the validation sets)",
                "test": "TEST: the published numbers are optimistic (select_on: test)"}[space.select_on]
        notes.append(f"selection: the best configuration of each method by {space.metric} ({space.mode}) on {what}")
        if space.confirms:
            notes.append(f"confirmation: the chosen configurations run again on {space.confirm.seeds} fresh seed(s) x"
                         f" {space.repeats.class_orders} class order(s) over all {space.stream_steps} steps; the table"
                         f" ranks only their {space.publish_metric}")
        else:
            notes.append(f"no confirmation stage: the table shows the chosen configurations' {space.publish_metric} on the"
                         f" search's own seeds (add confirm: {{seeds: 3}} for numbers on fresh seeds)")
    if space.protocol.type == "first_tasks":
        notes.append(f"protocol first_tasks: the search trains the first {search.num_steps} of {space.stream_steps} tasks")
    if space.scheduler.type == "asha" and not rungs(space.scheduler.grace_period, space.scheduler.reduction_factor, search.num_steps):
        notes.append(f"scheduler asha has no rung before the search's last step ({search.num_steps}, grace_period"
                     f" {space.scheduler.grace_period}): it never stops a trial early; use scheduler: {{type: fifo}}")
    return notes


def _complete_point(space: SearchSpace, point: Mapping[str, Any], base_cfg: Config, where: str) -> dict[str, Any]:
    """A starting point with every searched key of its strategy: missing keys take the config
    default (the paper's value), which must lie inside the key's distribution."""
    strategy = point.get(STRATEGY_KEY)
    if strategy not in space.strategies:
        raise SpaceError(f"{where}: points_to_evaluate: {STRATEGY_KEY}={strategy!r} is not one of the space's strategies {sorted(space.strategies)}")
    params = space.strategies[strategy]
    searched = {k: d for k, d in params.items() if not d.is_fixed}
    extra = [k for k in point if k != STRATEGY_KEY and k not in searched]
    if extra:
        raise SpaceError(f"{where}: points_to_evaluate for {strategy}: '{extra[0]}' is not searched by {strategy}{did_you_mean(extra[0], list(searched))}")
    defaults = flat(_build({**space.base, STRATEGY_KEY: strategy, **{k: d.value for k, d in params.items() if d.is_fixed}}, where))
    out: dict[str, Any] = {STRATEGY_KEY: strategy}
    for key, dist in searched.items():
        value = point.get(key, defaults[key])
        if not dist.contains(value):
            origin = "given" if key in point else "default"
            raise SpaceError(f"{where}: points_to_evaluate for {strategy}: {key} = {value!r} ({origin}) is outside {dist.describe()}")
        out[key] = value
    return out


def shipped_spaces_dir() -> Path:
    """``search_spaces/`` of the source tree (next to ``platform/``)."""
    return Path(__file__).resolve().parents[2] / "search_spaces"


def make_sampler(space: SearchSpace) -> Any:
    """The Optuna sampler the space asks for (``optuna.samplers.BaseSampler``)."""
    import warnings

    import optuna

    smp = space.sampler
    if smp.type == "grid":
        from contavsep_platform.grid_sampler import AskTellGridSampler

        return AskTellGridSampler(space.grid(), seed=smp.seed)
    if smp.type == "random":
        return optuna.samplers.RandomSampler(seed=smp.seed)
    if smp.type == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=smp.seed)
    # multivariate + group: TPE models each strategy's parameters jointly and apart from the other
    # strategies' (the space is conditional: trials of different strategies have different keys).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=smp.seed, n_startup_trials=smp.n_startup_trials, multivariate=True, group=True)
