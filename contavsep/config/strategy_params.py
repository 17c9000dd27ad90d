"""What a strategy's own ``Params`` declare its ``strategy.*`` keys with, and the keys
:class:`~contavsep.config.schema.StrategyConfig` held before each strategy declared its own."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from contavsep.config.error import ConfigError

# The keys StrategyConfig held before each strategy declared its own (issue 21), with the values
# they had: configs stored then (checkpoints, sweep fingerprints) carry all of them, whatever the
# strategy; the ones the stored strategy does not have are dropped when such a config is read.
LEGACY_STRATEGY_DEFAULTS: dict[str, Any] = {
    "strategy.lambda_ins": 0.1,
    "strategy.lambda_cls": 0.3,
    "strategy.lambda_dist": 0.3,
    "strategy.temperature": 0.05,
    "strategy.crosssdc_form": "anchors",
    "strategy.lambda_att": 1.0,
    "strategy.lambda_ewc": 1000.0,
    "strategy.ewc_decay": 1.0,
    "strategy.fisher_batches": 32,
    "strategy.lambda_pod": 0.01,
    "strategy.pod_scales": 3,
    "strategy.ewf_alpha": 0.5,
}


def bounded(
    default: Any, *, above: float | None = None, at_least: float | None = None, at_most: float | None = None
) -> Any:
    """A hyperparameter field (of a strategy's ``Params``) with its valid range, checked whenever
    a config is built: ``above`` is a strict lower limit, ``at_least``/``at_most`` inclusive ones."""
    return field(default=default, metadata={"above": above, "at_least": at_least, "at_most": at_most})


def one_of(default: str, choices: tuple[str, ...]) -> Any:
    """A hyperparameter field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": choices})


@dataclass(frozen=True)
class StrategyParams:
    """Base of every strategy's ``Params``: the ranges and choices its fields declare with
    :func:`bounded` and :func:`one_of` are checked whenever one is built (a config, a test, a
    resumed checkpoint), so a strategy's rules live in its own file and nowhere else."""

    def __post_init__(self) -> None:
        _check_declared(self, "strategy.")


def strategy_params(name: str) -> type[StrategyParams]:
    """The ``Params`` class of strategy ``name`` (imports that strategy's module; a
    :class:`ConfigError` with the closest name for an unknown one)."""
    from contavsep.registry import STRATEGIES, RegistryError

    try:
        return typing.cast(type[StrategyParams], STRATEGIES.get(name).Params)
    except RegistryError as exc:
        raise ConfigError(f"strategy.name: {exc}") from None


def _check_declared(params: Any, prefix: str) -> None:
    """The ranges and choices a ``Params`` class declares with :func:`bounded` and :func:`one_of`."""
    for f in dataclasses.fields(params):
        key, value, rule = prefix + f.name, getattr(params, f.name), f.metadata
        if rule.get("choices") is not None and value not in rule["choices"]:
            raise ConfigError(f"{key} must be one of {', '.join(rule['choices'])}, got '{value}'")
        low, high, above = rule.get("at_least"), rule.get("at_most"), rule.get("above")
        if low is not None and high is not None and not low <= value <= high:
            raise ConfigError(f"{key} must be in [{low:g}, {high:g}], got {value}")
        if low is not None and not value >= low:
            raise ConfigError(f"{key} must be >= {low:g}, got {value}")
        if high is not None and not value <= high:
            raise ConfigError(f"{key} must be <= {high:g}, got {value}")
        if above is not None and not value > above:
            raise ConfigError(f"{key} must be > {above:g}, got {value}")
