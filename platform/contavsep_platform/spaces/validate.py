"""Validation of a space before any trial starts: every key, strategy, bound, choice and setting,
checked by building the real :class:`contavsep.config.Config` with them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from contavsep.config import Config, ConfigError, flat, make_config, valid_keys
from contavsep.suggest import did_you_mean
from contavsep_platform.spaces.distributions import Distribution
from contavsep_platform.spaces.errors import SpaceError
from contavsep_platform.spaces.keys import STORAGE_PLACEHOLDER, STRATEGY_KEY
from contavsep_platform.spaces.objectives import FINAL_OBJECTIVES, OBJECTIVES, _scores_beyond_sdr, base_metric, split_of
from contavsep_platform.spaces.selection import METHOD_KEYS
from contavsep_platform.spaces.space import SearchSpace

# The first step whose evaluation includes old classes, as Tune's completed-steps count: a rung
# before it compares trials that have not met forgetting yet (step 1 is plain supervised training).
FIRST_STEP_WITH_OLD_CLASSES = 2
PROTOCOLS = ("full_stream", "first_tasks")


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


# Keys only base may set (a strategy may not even fix them to its own value).
BASE_ONLY = (
    "preset",
    STRATEGY_KEY,
    "eval.validate",
    "eval.val_windows_per_clip",
    "eval.val_pairs_per_clip",
    "eval.val_seed",
    "eval.val_metrics",
)


def _check_key(key: str, where: str) -> None:
    keys = valid_keys()
    if key not in keys:
        raise SpaceError(f"{where}: unknown config key '{key}'{did_you_mean(key, keys)}; see `contavsep config --keys`")


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
        raise SpaceError(
            f'{where}: base must set data.uri (a dataset URI, or "{STORAGE_PLACEHOLDER}/datasets/<name>"); or pass --set data.uri=...'
        )
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
                _build(
                    {**overrides, **together},
                    f"{where}: strategies.{name} with every parameter at its {'lower' if corner == 0 else 'upper'} bound",
                )

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
        raise SpaceError(
            f"{where}: metric '{first}'{did_you_mean(first, OBJECTIVES)} is not reported at every step; use one of {', '.join(OBJECTIVES)}"
        )
    for objective in space.objectives:
        name = base_metric(objective.metric)
        if name not in FINAL_OBJECTIVES:
            raise SpaceError(
                f"{where}: objective '{name}'{did_you_mean(name, FINAL_OBJECTIVES)} is not a result value; use one of {', '.join(FINAL_OBJECTIVES)}"
            )
        split = split_of(objective.metric)
        if split is not None and split != space.select_on:
            if split == "test":
                raise SpaceError(
                    f"{where}: objective '{objective.metric}' selects on the test split, whose numbers the sweep"
                    f" publishes (optimistic); write '{name}' (validation), or add 'select_on: test' to say so"
                )
            raise SpaceError(
                f"{where}: objective '{objective.metric}' reads validation but the space says select_on: {space.select_on};"
                f" write '{name}' or drop select_on"
            )
        if objective.mode not in ("max", "min"):
            raise SpaceError(f"{where}: mode of {objective.metric} must be 'max' or 'min', got '{objective.mode}'")
    if len({o.metric for o in space.objectives}) != len(space.objectives):
        raise SpaceError(f"{where}: objectives repeat a metric: {[o.metric for o in space.objectives]}")
    if space.select_on == "val" and not base_cfg.eval.validate:
        raise SpaceError(
            f"{where}: base sets eval.validate=false, but the space selects on validation; drop eval.validate"
            f" (or add 'select_on: test', which is optimistic)"
        )
    if base_cfg.eval.val_metrics == "sdr":
        for objective in space.objectives:
            if split_of(objective.metric) == "val" and _scores_beyond_sdr(objective.metric):
                raise SpaceError(
                    f"{where}: objective '{objective.metric}' needs SIR/SAR on validation, which is scored for SDR"
                    f" only by default; add 'eval.val_metrics: all' to base"
                )
    for key in space.factors:
        _check_key(key, f"{where}: factors")
        if key in UNSEARCHABLE or key in METHOD_KEYS:
            raise SpaceError(
                f"{where}: factors: {key} cannot be a factor ({UNSEARCHABLE.get(key, 'it is part of every method already')})"
            )
        for name, params in space.strategies.items():
            if key in params and params[key].kind not in ("choice", "fixed"):
                raise SpaceError(
                    f"{where}: factor {key} is searched by {name} as {params[key].describe()}; a factor is a"
                    f" table row: give it a choice (or a fixed value)"
                )
    if len(set(space.factors)) != len(space.factors):
        raise SpaceError(f"{where}: factors repeat a key: {list(space.factors)}")
    conf = space.confirm
    if conf.seeds < 0 or conf.max_pareto < 1:
        raise SpaceError(
            f"{where}: confirm needs seeds >= 0 and max_pareto >= 1, got {conf.seeds} and {conf.max_pareto}"
        )
    if conf.seeds and not space.selects:
        raise SpaceError(
            f"{where}: confirm: the space makes no selection (it searches only {', '.join(space.method_keys)}:"
            f" every configuration is a method of its own), so there is nothing to confirm; drop confirm"
            f" (raise repeats.seeds for tighter intervals)"
        )
    proto = space.protocol
    if proto.type not in PROTOCOLS:
        raise SpaceError(
            f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got '{proto.type}'{did_you_mean(proto.type, PROTOCOLS)}"
        )
    if proto.type == "first_tasks":
        if not FIRST_STEP_WITH_OLD_CLASSES <= proto.tasks < base_cfg.data.num_steps:
            raise SpaceError(
                f"{where}: protocol first_tasks needs {FIRST_STEP_WITH_OLD_CLASSES} <= tasks < data.num_steps"
                f" ({base_cfg.data.num_steps}), got {proto.tasks}: the search must meet old classes, and see"
                f" less than the whole stream"
            )
        if not conf.seeds:
            raise SpaceError(
                f"{where}: protocol first_tasks searches on the first {proto.tasks} tasks only, so only a"
                f" confirmation gives full-stream numbers; add confirm: {{seeds: 3}}"
            )
    rep = space.repeats
    if rep.seeds < 1 or rep.class_orders < 1 or rep.first_seed < 0:
        raise SpaceError(
            f"{where}: repeats need seeds >= 1, class_orders >= 1 and first_seed >= 0, got {rep.seeds},"
            f" {rep.class_orders} and {rep.first_seed}"
        )
    if rep.class_orders > 1 and "data.shuffle_classes" in space.base:
        raise SpaceError(
            f"{where}: base sets data.shuffle_classes but repeats.class_orders chooses the orders; drop one"
        )
    sch = space.scheduler
    if sch.type not in ("asha", "fifo"):
        raise SpaceError(
            f"{where}: scheduler.type must be asha or fifo, got '{sch.type}'{did_you_mean(sch.type, ('asha', 'fifo'))}"
        )
    num_steps = base_cfg.data.num_steps
    search_steps = proto.tasks if proto.type == "first_tasks" else num_steps
    if sch.type == "asha":
        if sch.grace_period < FIRST_STEP_WITH_OLD_CLASSES:
            raise SpaceError(
                f"{where}: scheduler.grace_period {sch.grace_period} would stop trials after step {sch.grace_period}, before any"
                f" strategy has met an old class; use grace_period >= {FIRST_STEP_WITH_OLD_CLASSES} (or scheduler: {{type: fifo}})"
            )
        if not (sch.grace_period <= search_steps and sch.reduction_factor > 1 and sch.brackets >= 1):
            raise SpaceError(
                f"{where}: scheduler needs grace_period <= the steps the search trains ({search_steps}),"
                f" reduction_factor > 1, brackets >= 1"
            )
    smp = space.sampler
    samplers = ("tpe", "random", "grid", "nsga2")
    if smp.type not in samplers:
        raise SpaceError(
            f"{where}: sampler.type must be one of {', '.join(samplers)}, got '{smp.type}'{did_you_mean(smp.type, samplers)}"
        )
    res = space.resources
    if res.workers < 1 or res.cpus < 0 or res.gpus < 0 or res.driver_cpus <= 0 or res.max_concurrent < 0:
        raise SpaceError(
            f"{where}: resources need workers >= 1, cpus >= 0, gpus >= 0, driver_cpus > 0, max_concurrent >= 0"
        )
    if res.cpus == 0 and res.gpus == 0:
        raise SpaceError(f"{where}: resources: a worker needs some cpus or gpus")
    if res.gpus > 1 and not float(res.gpus).is_integer():
        raise SpaceError(
            f"{where}: resources.gpus above 1 must be a whole number (Ray shares a GPU only in fractions below 1), got {res.gpus}"
        )
    if base_cfg.train.device.startswith("cuda") and res.gpus == 0:  # Ray hides every GPU from such a trial
        raise SpaceError(
            f"{where}: train.device={base_cfg.train.device} but resources.gpus is 0, so no trial would see a GPU;"
            f" set resources.gpus (e.g. 1) or train.device=auto"
        )
    if base_cfg.train.batch_size % res.workers:
        raise SpaceError(
            f"{where}: train.batch_size ({base_cfg.train.batch_size}) must be divisible by resources.workers ({res.workers})"
        )
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
        raise SpaceError(
            f"{where}: {len(points)} points_to_evaluate but num_samples is {num_samples}; raise num_samples"
        )
    return replace(
        space, num_steps=num_steps, stream_steps=num_steps, num_samples=num_samples, points_to_evaluate=points
    )


def _complete_point(space: SearchSpace, point: Mapping[str, Any], base_cfg: Config, where: str) -> dict[str, Any]:
    """A starting point with every searched key of its strategy: missing keys take the config
    default (the paper's value), which must lie inside the key's distribution."""
    strategy = point.get(STRATEGY_KEY)
    if strategy not in space.strategies:
        raise SpaceError(
            f"{where}: points_to_evaluate: {STRATEGY_KEY}={strategy!r} is not one of the space's strategies {sorted(space.strategies)}"
        )
    params = space.strategies[strategy]
    searched = {k: d for k, d in params.items() if not d.is_fixed}
    extra = [k for k in point if k != STRATEGY_KEY and k not in searched]
    if extra:
        raise SpaceError(
            f"{where}: points_to_evaluate for {strategy}: '{extra[0]}' is not searched by {strategy}{did_you_mean(extra[0], list(searched))}"
        )
    defaults = flat(
        _build({**space.base, STRATEGY_KEY: strategy, **{k: d.value for k, d in params.items() if d.is_fixed}}, where)
    )
    out: dict[str, Any] = {STRATEGY_KEY: strategy}
    for key, dist in searched.items():
        value = point.get(key, defaults[key])
        if not dist.contains(value):
            origin = "given" if key in point else "default"
            raise SpaceError(
                f"{where}: points_to_evaluate for {strategy}: {key} = {value!r} ({origin}) is outside {dist.describe()}"
            )
        out[key] = value
    return out
