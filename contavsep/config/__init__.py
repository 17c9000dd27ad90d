"""Configuration: frozen dataclasses, strict loading, dotted keys as the one vocabulary.

A :class:`Config` is built from a size and budget preset (``paper``, ``search``, ``small``,
``tiny``), then an optional YAML overlay, then dotted overrides (``strategy.lambda_ins=0.2``).
The same dotted keys are used by the CLI (``--set k=v``), search spaces, Ray Tune and MLflow
params (:func:`flat`).

Loading is strict: an unknown key or a value of the wrong type raises :class:`ConfigError` with
the closest valid key, so a typo in a sweep fails before any trial starts.

Modules (each imports only those above it):

- :mod:`contavsep.config.error` -- :class:`ConfigError`.
- :mod:`contavsep.config.schema` -- the frozen section dataclasses and :class:`Config`, ``SPEED_KEYS``
  and the allowed values of the speed and layout switches.
- :mod:`contavsep.config.presets` -- ``PRESETS``, the size and budget presets.
- :mod:`contavsep.config.strategy_params` -- :class:`StrategyParams`, :func:`bounded`, :func:`one_of`,
  :func:`strategy_params` and ``LEGACY_STRATEGY_DEFAULTS``.
- :mod:`contavsep.config.keys` -- the dotted-key engine: :func:`valid_keys`, :func:`flat`,
  :func:`parse_overrides`, ``RETIRED_KEYS`` and ``LEGACY_DEFAULTS``.
- :mod:`contavsep.config.yaml_io` -- :func:`load_yaml_overlay`, :func:`to_yaml`, :func:`yaml_error_line`.
- :mod:`contavsep.config.validation` -- ``RANGES``, :func:`drop_epochs` and :func:`validate`.
- :mod:`contavsep.config.build` -- :func:`make_config`, :func:`apply_overrides` and :func:`from_flat`.
"""

from contavsep.config.build import apply_overrides, from_flat, make_config
from contavsep.config.error import ConfigError
from contavsep.config.keys import LEGACY_DEFAULTS, RETIRED_KEYS, flat, parse_overrides, valid_keys
from contavsep.config.presets import PRESETS
from contavsep.config.schema import (
    CUDAGRAPH_MODES,
    DECODER_CONVS,
    ENCODER_CONVS,
    SPEED_KEYS,
    SWITCH_VALUES,
    AudioConfig,
    Config,
    DataConfig,
    MemoryConfig,
    ModelConfig,
    StrategyConfig,
    TrainConfig,
)
from contavsep.config.strategy_params import LEGACY_STRATEGY_DEFAULTS, StrategyParams, bounded, one_of
from contavsep.config.validation import drop_epochs, validate
from contavsep.config.yaml_io import to_yaml, yaml_error_line

__all__ = [
    "ConfigError",
    "AudioConfig",
    "ModelConfig",
    "TrainConfig",
    "StrategyConfig",
    "MemoryConfig",
    "DataConfig",
    "Config",
    "SPEED_KEYS",
    "SWITCH_VALUES",
    "ENCODER_CONVS",
    "DECODER_CONVS",
    "CUDAGRAPH_MODES",
    "PRESETS",
    "LEGACY_STRATEGY_DEFAULTS",
    "StrategyParams",
    "bounded",
    "one_of",
    "LEGACY_DEFAULTS",
    "RETIRED_KEYS",
    "valid_keys",
    "flat",
    "parse_overrides",
    "yaml_error_line",
    "to_yaml",
    "drop_epochs",
    "validate",
    "make_config",
    "apply_overrides",
    "from_flat",
]
