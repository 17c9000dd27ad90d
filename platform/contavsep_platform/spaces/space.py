"""The validated :class:`SearchSpace` and the dataclasses of its sections (scheduler, sampler,
resources, repeats, confirmation, protocol, objectives)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from contavsep.config import Config, flat, make_config
from contavsep_platform.spaces.distributions import Distribution
from contavsep_platform.spaces.errors import SpaceError
from contavsep_platform.spaces.keys import GROUP_KEY, REPEAT_CONFIG_KEYS, REPEAT_KEY, STRATEGY_KEY
from contavsep_platform.spaces.objectives import base_metric, result_key
from contavsep_platform.spaces.selection import METHOD_KEYS, selection_text

# ----------------------------------------------------------------------------------------------
# scheduler, sampler, resources


@dataclass(frozen=True)
class SchedulerSpec:
    """Early stopping at step boundaries. ``asha`` uses ``step`` (completed steps) as time."""

    type: str = "asha"  # asha | fifo
    grace_period: int = 2  # steps every trial runs before it can be stopped (>= 2: old classes met)
    reduction_factor: float = 2.0  # ASHA keeps the top 1/reduction_factor at each rung
    brackets: int = 1


def rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """Completed-step counts where groups are judged: ``grace x rf^k < max_t``."""
    out, t = [], float(grace_period)
    while t < max_t:
        out.append(int(t))
        t *= reduction_factor
    return sorted(set(out))


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
    # (set it for autoscaling clusters)
    max_concurrent: int = 0  # trials at once; 0 = as many as the cluster's resources fit now

    @property
    def trial_cpus(self) -> float:
        return self.workers * self.cpus + self.driver_cpus

    @property
    def trial_gpus(self) -> float:
        return self.workers * self.gpus

    def gpu_sharing(self) -> str:
        """How a trial uses GPUs, for ``sweep --check``: how many trials share one GPU (a
        worker's fraction packs ``floor(1 / gpus)`` workers on it), or how many GPUs one holds."""
        if self.gpus <= 0:
            return "no GPU (CPU trials)"
        if self.gpus >= 1:
            return f"{self.trial_gpus:g} GPU(s) per trial ({self.workers} worker(s) x {self.gpus:g})"
        workers_per_gpu = int(1 / self.gpus + 1e-9)
        trials = workers_per_gpu / self.workers
        plural = "s" if trials != 1 else ""
        packed = f"{trials:g} trial{plural} per GPU" if trials >= 1 else f"1 trial per {1 / trials:g} GPUs"
        return f"{packed} ({workers_per_gpu} worker(s) of {self.gpus:g} GPU each fit on one)"

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
        needs = [("CPU", trial_cpus), ("GPU", self.trial_gpus)] + (
            [(DRIVER_RESOURCE, self.driver_cpus)] if on_head else []
        )
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
    """A validated search space (see the package docstring for the file format)."""

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
        return any(
            not d.is_fixed and k not in self.method_keys
            for params in self.strategies.values()
            for k, d in params.items()
        )

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
            repeats = RepeatSpec(
                self.confirm.seeds, self.repeats.class_orders, self.repeats.first_seed + self.repeats.seeds
            )
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
                raise SpaceError(
                    f"sampler grid: strategy {name} searches {bad[0]} with {searched[bad[0]].describe()}; a grid needs choice"
                )
            if keys is None:
                keys = set(searched)
            elif set(searched) != keys:
                raise SpaceError(
                    f"sampler grid: every strategy must search the same keys ({sorted(keys)}), {name} searches {sorted(searched)}"
                )
            for k, d in searched.items():
                if k in grid and grid[k] != list(d.choices):
                    raise SpaceError(f"sampler grid: {k} has different choices in different strategies")
                grid[k] = list(d.choices)
        return grid

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())
