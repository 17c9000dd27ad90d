"""Reading a space: YAML text or a file -> :func:`validate_space` -> a :class:`SearchSpace`, with
``--set`` values fixed for every trial."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from contavsep.config import yaml_error_line
from contavsep.suggest import did_you_mean
from contavsep_platform.spaces.distributions import DISTRIBUTION_KINDS, Distribution, parse_distribution
from contavsep_platform.spaces.errors import SpaceError
from contavsep_platform.spaces.keys import STORAGE_PLACEHOLDER, STRATEGY_KEY
from contavsep_platform.spaces.objectives import SPLITS, named_metric
from contavsep_platform.spaces.space import (
    ConfirmSpec,
    Objective,
    ProtocolSpec,
    RepeatSpec,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SearchSpace,
)
from contavsep_platform.spaces.validate import validate_space

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


TOP_LEVEL_KEYS = (
    "name",
    "description",
    "experiment",
    "base",
    "common",
    "strategies",
    "metric",
    "mode",
    "objectives",
    "num_samples",
    "repeats",
    "scheduler",
    "sampler",
    "resources",
    "max_failures",
    "points_to_evaluate",
    "select_on",
    "factors",
    "confirm",
    "protocol",
)


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
            raise SpaceError(
                f"{where}: unknown field '{key}'{did_you_mean(str(key), names)}; valid: {', '.join(names)}"
            )
        f = cls.__dataclass_fields__[key]
        default = f.default
        if value is None and "None" in str(f.type):
            kwargs[key] = None
        elif isinstance(default, bool):
            kwargs[key] = value
        elif (
            isinstance(default, int)
            and not isinstance(value, bool)
            and isinstance(value, (int, float))
            and float(value).is_integer()
        ):
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


def with_overrides(space: SearchSpace, overrides: Mapping[str, Any]) -> SearchSpace:
    """``space`` with ``--set`` values fixed for every trial (a searched key becomes fixed)."""
    if not overrides:
        return space
    if STRATEGY_KEY in overrides:
        raise SpaceError(f"--set {STRATEGY_KEY}=...: choose strategies in the space's 'strategies' section")
    base = {**space.base, **overrides}
    strategies = {s: {k: d for k, d in params.items() if k not in overrides} for s, params in space.strategies.items()}
    points = tuple({k: v for k, v in p.items() if k not in overrides} for p in space.points_to_evaluate)
    return validate_space(replace(space, base=base, strategies=strategies, points_to_evaluate=points))


def parse_space(
    text: str, *, source: str = "<space>", storage_uri: str | None = None, overrides: Mapping[str, Any] | None = None
) -> SearchSpace:
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
        raise SpaceError(
            f"{source}: unknown section '{unknown[0]}'{did_you_mean(str(unknown[0]), TOP_LEVEL_KEYS)}; valid: {', '.join(TOP_LEVEL_KEYS)}"
        )
    if not raw.get("strategies"):
        raise SpaceError(
            f"{source}: 'strategies' must name at least one strategy, e.g. strategies: {{contavsep: {{}}}}"
        )

    base = _dotted(raw.get("base"), f"{source}: base")
    for key, value in base.items():
        if isinstance(value, Mapping):
            raise SpaceError(
                f"{source}: base.{key} is fixed for all trials; move distributions into a strategy (or 'common')"
            )
        if isinstance(value, str) and STORAGE_PLACEHOLDER in value:
            if storage_uri is None:
                raise SpaceError(f"{source}: base.{key} uses {STORAGE_PLACEHOLDER} but no storage root is configured")
            base[key] = value.replace(STORAGE_PLACEHOLDER, storage_uri.rstrip("/"))
    common = {
        k: parse_distribution(v, f"{source}: common.{k}")
        for k, v in _dotted(raw.get("common"), f"{source}: common").items()
    }
    strategies_raw = raw["strategies"]
    if isinstance(strategies_raw, list):  # a plain list of names: each with the common space only
        strategies_raw = {name: {} for name in strategies_raw}
    if not isinstance(strategies_raw, Mapping):
        raise SpaceError(f"{source}: 'strategies' must map strategy names to their distributions")
    strategies: dict[str, dict[str, Distribution]] = {}
    for name, params in strategies_raw.items():
        own = {
            k: parse_distribution(v, f"{source}: strategies.{name}.{k}")
            for k, v in _dotted(params, f"{source}: strategies.{name}").items()
        }
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
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not float(value).is_integer())
        ):
            raise SpaceError(f"{source}: {key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
        return kind(value)

    extra_objectives: tuple[Objective, ...] = ()
    metric, mode = raw.get("metric", "sdr"), raw.get("mode", "max")
    if "objectives" in raw:
        listed = raw["objectives"]
        if "metric" in raw or "mode" in raw:
            raise SpaceError(
                f"{source}: give either metric/mode or objectives, not both (objectives' first entry is the metric)"
            )
        if not isinstance(listed, list) or not listed or not all(isinstance(o, Mapping) for o in listed):
            raise SpaceError(f"{source}: objectives must be a list of {{metric: NAME, mode: max|min}}")
        parsed = [_section(o, f"{source}: objectives[{i}]", Objective) for i, o in enumerate(listed)]
        metric, mode = parsed[0].metric, parsed[0].mode
        extra_objectives = tuple(parsed[1:])

    select_on = raw.get("select_on", "val")
    if select_on not in SPLITS:
        raise SpaceError(
            f"{source}: select_on must be 'val' (default) or 'test' (optimistic, only on request), got {select_on!r}"
        )
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
        raise SpaceError(
            f"{source}: num_samples must be >= 1, got {num_samples} (leave it out for the grid size or"
            f" one trial per starting point)"
        )
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
    return with_overrides(space, dict(overrides)) if overrides else space


def load_space(
    path: str | Path, *, storage_uri: str | None = None, overrides: Mapping[str, Any] | None = None
) -> SearchSpace:
    """Read and validate the space file at ``path`` (``--set`` values in ``overrides``)."""
    p = Path(path)
    if not p.is_file():
        shipped = sorted(q.name for q in (Path(__file__).resolve().parents[3] / "search_spaces").glob("*.yaml"))
        hint = f"; shipped spaces: {', '.join('search_spaces/' + s for s in shipped)}" if shipped else ""
        raise FileNotFoundError(f"search space {p} does not exist{hint}")
    return parse_space(p.read_text(), source=str(p), storage_uri=storage_uri, overrides=overrides)


def shipped_spaces_dir() -> Path:
    """``search_spaces/`` of the source tree (next to ``platform/``)."""
    return Path(__file__).resolve().parents[3] / "search_spaces"
