"""The dotted keys, the one vocabulary of CLI, YAML, search spaces, Tune and MLflow: the valid keys,
strict typed application of dotted updates to a config, and :func:`flat`."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from contavsep.config.error import ConfigError
from contavsep.config.schema import Config, StrategyConfig
from contavsep.config.strategy_params import strategy_params
from contavsep.suggest import did_you_mean


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(cls: type | None = None, strategy: str | None = None) -> list[str]:
    """All dotted keys of ``Config`` (or of a section class), in declaration order. The
    ``strategy.*`` keys are those of ``strategy`` (a name), or of every registered strategy."""
    cls = Config if cls is None else cls
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        tp = _field_types(cls)[f.name]
        if f.metadata.get("inline"):  # StrategyConfig.params: the strategy's own keys
            from contavsep.registry import STRATEGIES

            names = [strategy] if strategy is not None else STRATEGIES.names()
            for name in names:
                keys.extend(k for k in valid_keys(strategy_params(name)) if k not in keys)
        elif dataclasses.is_dataclass(tp):
            keys.extend(f"{f.name}.{k}" for k in valid_keys(typing.cast(type, tp), strategy))
        else:
            keys.append(f.name)
    return keys


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to the field type ``tp``; strings (from the CLI) are parsed."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        raise ConfigError(f"{key}: union-typed fields are not supported")  # none exist
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # a YAML true/false for a key whose values include "true"/"false"
            return "true" if value else "false"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - every field is bool/int/float/str
        raise ConfigError(f"{key}: unsupported field type {tp!r}")
    raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")


def _nest(items: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn a mapping with dotted and/or nested keys into one flat {dotted: value} dict."""
    out: dict[str, Any] = {}
    for key, value in items.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_nest(value, full + "."))
        else:
            out[full] = value
    return out


# Keys that existed once and were removed: why, for the error a user who sets one gets. Stored
# configs that still hold them (step checkpoints, sweep fingerprints) load without them.
RETIRED_KEYS = {
    "train.num_workers": "it configured nothing (batches are built by the producer thread, see train.prefetch_batches)",
}

# Keys added after configs were first stored (checkpoints, sweep records), with the value that
# was in effect before the key existed: a stored config without the key meant this, not today's
# default, so resuming it under the new default is refused as the change of setting it is.
LEGACY_DEFAULTS: dict[str, Any] = {
    "eval.val_metrics": "all",  # validation scored SDR, SIR and SAR before it could score SDR alone
}


def _apply(cfg: Any, updates: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with dotted ``updates`` applied (strict)."""
    types_ = _field_types(type(cfg))
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if prefix + key in RETIRED_KEYS:
            raise ConfigError(f"config key '{prefix}{key}' was removed: {RETIRED_KEYS[prefix + key]}; leave it out")
        if head not in types_:
            options = [prefix + k for k in valid_keys(type(cfg))]
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{did_you_mean(prefix + key, options)}; "
                f"see `contavsep config --keys` for all keys"
            )
        tp = types_[head]
        if dataclasses.is_dataclass(tp):
            if not rest:
                raise ConfigError(
                    f"'{prefix}{key}' is a section; set one of its keys, e.g. '{prefix}{key}.{valid_keys(typing.cast(type, tp))[0]}'"
                )
            grouped.setdefault(head, {})[rest] = value
        else:
            if rest:
                raise ConfigError(f"'{prefix}{head}' is a value, not a section (got '{prefix}{key}')")
            direct[head] = _coerce(prefix + head, value, tp)
    for head, sub in grouped.items():
        current = getattr(cfg, head)
        if isinstance(current, StrategyConfig):
            direct[head] = _apply_strategy(current, sub, f"{prefix}{head}.")
        else:
            direct[head] = _apply(current, sub, f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def _apply_strategy(current: StrategyConfig, updates: Mapping[str, Any], prefix: str) -> StrategyConfig:
    """``strategy.name`` picks the ``Params`` class; the other keys are checked against its fields
    alone (a key of another strategy is refused, naming whose it is). A new name starts from the
    new strategy's defaults: a value of one strategy's key means nothing to another."""
    name = _coerce(f"{prefix}name", updates.get("name", current.name), str)
    params_cls = strategy_params(name)
    params = current.params if isinstance(current.params, params_cls) else params_cls()
    own = [f.name for f in dataclasses.fields(params_cls)]
    for key in updates:
        if key.startswith("name."):
            raise ConfigError(f"'{prefix}name' is a value, not a section (got '{prefix}{key}')")
        if key != "name" and key.partition(".")[0] not in own:
            owners = _strategies_with_key(key.partition(".")[0])
            whose = (
                f" (a key of {', '.join(owners)})" if owners else did_you_mean(prefix + key, [prefix + k for k in own])
            )
            has = ", ".join(prefix + k for k in own) or "none"
            raise ConfigError(f"strategy '{name}' has no key '{prefix}{key}'{whose}; its keys: {has}")
    rest = {k: v for k, v in updates.items() if k != "name"}
    return StrategyConfig(name=name, params=_apply(params, rest, prefix))


def _strategies_with_key(key: str) -> list[str]:
    """The registered strategies whose ``Params`` have a field ``key``."""
    from contavsep.registry import STRATEGIES

    return [n for n in STRATEGIES.names() if key in {f.name for f in dataclasses.fields(STRATEGIES.get(n).Params)}]


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse CLI ``k=v`` strings into a dict (values stay strings; typed on apply)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{pair}' must look like section.key=value, e.g. strategy.lambda_ins=0.2")
        out[key.strip()] = value.strip()
    return out


def flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """The config as {dotted key: value}, the vocabulary of CLI, search spaces, Tune and MLflow."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("inline"):
            out.update(flat(value, prefix))
        elif dataclasses.is_dataclass(value):
            out.update(flat(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out
