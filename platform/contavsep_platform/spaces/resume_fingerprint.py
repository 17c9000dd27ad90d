"""The resume fingerprint: what defines a sweep's trials, stored with the sweep, so that a
``--resume`` with another space (or ``--set``) is refused naming the keys that differ."""

from __future__ import annotations

from collections.abc import Mapping

from contavsep.config import LEGACY_DEFAULTS, LEGACY_STRATEGY_DEFAULTS, RETIRED_KEYS, SPEED_KEYS, flat
from contavsep_platform.spaces.keys import STRATEGY_KEY
from contavsep_platform.spaces.space import SearchSpace
from contavsep_platform.spaces.validate import _build, _build_base, _is_strategy_key

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
    out.update(
        {
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
        }
    )
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
    return [
        f"{k}: {stored.get(k, missing)} -> {now.get(k, missing)}"
        for k in sorted(set(stored) | set(now))
        if k not in ignored and stored.get(k) != now.get(k)
    ]
