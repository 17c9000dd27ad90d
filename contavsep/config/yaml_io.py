"""YAML in and out: a YAML overlay read into dotted keys, the resolved config written as YAML."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from contavsep.config.error import ConfigError
from contavsep.config.keys import _nest, flat
from contavsep.config.schema import Config


def yaml_error_line(exc: Exception) -> str:
    """A YAML parse error in one line: where it is and what is wrong (PyYAML's own message spans
    several lines with the offending text)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def load_yaml_overlay(path: str | Path) -> dict[str, Any]:
    """Read a YAML file of nested and/or dotted keys into a flat dotted dict."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(data).__name__}")
    return _nest(data)


def to_yaml(cfg: Config) -> str:
    """The resolved config as nested YAML (an MLflow / checkpoint artifact)."""
    import yaml

    nested: dict[str, Any] = {}
    for key, value in flat(cfg).items():  # nested by section, a strategy's keys inline as in flat()
        *sections, name = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return yaml.safe_dump(nested, sort_keys=False)
