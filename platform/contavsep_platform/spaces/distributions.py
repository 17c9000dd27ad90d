"""Distributions: one searched (or fixed) value of a dotted config key, and its YAML entry."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contavsep.suggest import did_you_mean
from contavsep_platform.spaces.errors import SpaceError

DISTRIBUTION_KINDS = ("uniform", "loguniform", "int", "choice", "fixed")


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
    if (
        not isinstance(arg, (list, tuple))
        or len(arg) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in arg)
    ):
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
        return Distribution(
            "int", low=int(low), high=int(high), step=int(step) if step is not None else None, log=bool(log)
        )
    if step is not None and (step <= 0 or not math.isclose(round((high - low) / step) * step, high - low)):
        raise SpaceError(f"{where}: uniform step {step} must be > 0 and divide [{low}, {high}]")
    return Distribution(kind, low=float(low), high=float(high), step=float(step) if step is not None else None)
