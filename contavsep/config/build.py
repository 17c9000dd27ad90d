"""Building a validated config: preset, then YAML overlay, then dotted overrides; and rebuilding
one from :func:`~contavsep.config.keys.flat` output."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contavsep.config.error import ConfigError
from contavsep.config.keys import LEGACY_DEFAULTS, RETIRED_KEYS, _apply, _nest, valid_keys
from contavsep.config.presets import PRESETS
from contavsep.config.schema import Config
from contavsep.config.strategy_params import LEGACY_STRATEGY_DEFAULTS
from contavsep.config.validation import validate
from contavsep.config.yaml_io import load_yaml_overlay
from contavsep.suggest import did_you_mean


def make_config(
    preset: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    yaml_path: str | Path | None = None,
) -> Config:
    """Build a validated config: preset, then YAML overlay, then dotted overrides.

    A ``preset`` key among the overrides or in the YAML selects the preset as well.
    """
    layers: list[dict[str, Any]] = []
    if yaml_path is not None:
        layers.append(load_yaml_overlay(yaml_path))
    if overrides:
        layers.append(_nest(overrides))
    for layer in layers:
        if "preset" in layer:
            preset = str(layer["preset"])
    # The strategy is chosen first, like the preset: its keys in any layer are its own.
    strategy = Config().strategy.name
    for layer in layers:
        if "strategy.name" in layer:
            strategy = layer["strategy.name"]
    if preset not in PRESETS:
        raise ConfigError(
            f"unknown preset '{preset}'{did_you_mean(preset, list(PRESETS))}; choose from {sorted(PRESETS)}"
        )
    cfg = _apply(Config(), {**PRESETS[preset], "preset": preset, "strategy.name": strategy})
    for layer in layers:
        cfg = _apply(cfg, {k: v for k, v in layer.items() if k != "preset"})
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return ``cfg`` with dotted ``overrides`` applied and validated (``preset`` is not allowed)."""
    flat_updates = _nest(overrides)
    if "preset" in flat_updates:
        raise ConfigError("'preset' can only be chosen when the config is created (make_config)")
    out = _apply(cfg, flat_updates)
    validate(out)
    return out


def from_flat(items: Mapping[str, Any]) -> Config:
    """Rebuild a config from :func:`flat` output (e.g. a checkpoint's resolved config); keys
    retired since it was written are dropped, keys added since it was written take the value
    that was in effect then (:data:`LEGACY_DEFAULTS`)."""
    kept = {k: v for k, v in items.items() if k != "preset" and k not in RETIRED_KEYS}
    kept.update({k: v for k, v in LEGACY_DEFAULTS.items() if k not in items})
    # written before each strategy declared its own keys: the other strategies' keys go
    own = valid_keys(strategy=str(items.get("strategy.name", Config().strategy.name)))
    kept = {k: v for k, v in kept.items() if k in own or k not in LEGACY_STRATEGY_DEFAULTS}
    return make_config(str(items.get("preset", "paper")), kept)
