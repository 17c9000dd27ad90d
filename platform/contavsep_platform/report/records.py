"""A sweep's runs as MLflow holds them: :class:`TrialRecord` (a child run) and :class:`SweepRecord`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from contavsep.config import LEGACY_STRATEGY_DEFAULTS, ConfigError, valid_keys
from contavsep.metric_names import FINAL_PREFIX, final_name, step_name_of_final
from contavsep.signature import signature
from contavsep_platform.spaces import REPEAT_CONFIG_KEYS
from contavsep_platform.tracking import STAGE_TAG, STRATEGY_TAG

# Keys that differ between trials for bookkeeping reasons, not as hyperparameters.
NOT_HYPERPARAMETERS = ("data.uri", "data.cache_dir", "train.device", "model.weights")
# Keys a repeat sets (spaces.RepeatSpec): the same configuration on another seed / class order.
REPEAT_KEYS = REPEAT_CONFIG_KEYS


def own_params(params: Mapping[str, str]) -> dict[str, str]:
    """A run's MLflow params with the keys of other strategies left out: runs logged before each
    strategy carried only its own keys (issue 21) hold every strategy's, so a sweep resumed
    across that change would otherwise split one configuration into two groups. Params of a
    strategy this version does not know are kept as they are."""
    try:
        own = set(valid_keys(strategy=params.get("strategy.name", "")))
    except ConfigError:
        return dict(params)
    return {k: v for k, v in params.items() if k in own or k not in LEGACY_STRATEGY_DEFAULTS}


def comparison_name(key: str) -> str:
    """An MLflow metric key as a comparison value name: ``final/forgetting_sdr`` ->
    ``forgetting/sdr``, ``final/sdr`` -> ``sdr``; other keys (``memory/clips``) are unchanged."""
    return step_name_of_final(key)


@dataclass(frozen=True)
class TrialRecord:
    """One child run: its config params (strings, as MLflow stores them) and latest metrics."""

    run_id: str
    name: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        return self.params.get("strategy.name") or self.tags.get(STRATEGY_TAG) or "?"

    @property
    def model(self) -> str:
        return self.params.get("model.name", "?")

    @property
    def memory_per_class(self) -> int:
        try:
            return int(float(self.params.get("memory.per_class", "0")))
        except ValueError:
            return 0

    @property
    def stage(self) -> str:
        """``search``, or ``confirm`` for a run of the confirmation stage."""
        return self.tags.get(STAGE_TAG, "search")

    @property
    def complete(self) -> bool:
        """Finished the whole task sequence (has final metrics)."""
        return final_name("sdr") in self.metrics

    def final(self, name: str) -> float:
        """A final value by step name (``sdr``, ``forgetting/sdr``); NaN where it was not logged."""
        value = self.metrics.get(final_name(name))
        return math.nan if value is None else float(value)

    @property
    def config_id(self) -> str:
        """A short hash of the configuration: every param but the repeat and bookkeeping keys."""
        kept = {k: v for k, v in self.params.items() if k not in REPEAT_KEYS and k not in NOT_HYPERPARAMETERS}
        return signature(kept)

    @property
    def repeat(self) -> str:
        """``seed<train.seed>-order<k>``: k is ``data.seed`` when the classes are shuffled, 0 for
        the dataset's own order (what spaces.RepeatSpec sets for class order k)."""
        shuffled = self.params.get("data.shuffle_classes", "False").lower() == "true"
        order = self.params.get("data.seed", "0") if shuffled else "0"
        return f"seed{self.params.get('train.seed', '0')}-order{order}"

    @property
    def values(self) -> dict[str, float]:
        """Final values by comparison name (``sdr``, ``forgetting/sdr``, ...); a value logged only
        per step (``memory/clips``) counts with its last step's value once the run is complete."""
        out = {comparison_name(k): float(v) for k, v in self.metrics.items() if k.startswith(FINAL_PREFIX)}
        if self.complete:
            for k, v in self.metrics.items():
                out.setdefault(k, float(v))
        return {k: v for k, v in out.items() if not math.isnan(v)}


@dataclass(frozen=True)
class SweepRecord:
    """A sweep as MLflow holds it."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    status: str
    tags: Mapping[str, str]
    trials: tuple[TrialRecord, ...]
    space_text: str = ""  # the parent's search_space.yaml ("" when it is missing)

    def ui_url(self) -> str | None:
        from contavsep_platform.mlflow_links import run_url

        return run_url(self.tracking_uri, self.experiment_id, self.parent_run_id)  # the model-training UI, not GenAI
