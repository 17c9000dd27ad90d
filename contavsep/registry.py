"""Name -> implementation registries with "did you mean" errors.

Entries are ``"module:attribute"`` strings imported on first use, so listing names or validating
a config never imports torch-heavy modules and nothing registers itself at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

from contavsep.errors import ContavsepError
from contavsep.suggest import did_you_mean


class RegistryError(ContavsepError, KeyError):
    """An unknown name was asked for; the message lists the closest and all valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    """A small lazy registry: ``kind`` names what it holds (e.g. "model", "strategy")."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def register(self, name: str, target: str) -> None:
        """Add ``name`` -> ``"module:attribute"`` (a plugin or a test's own strategy; the shipped
        entries are the literal tables below). An existing name is refused, never replaced."""
        if name in self._entries:
            raise RegistryError(f"{self.kind} '{name}' is already registered (as {self._entries[name]})")
        if ":" not in target:
            raise RegistryError(f"{self.kind} '{name}': the target must look like 'module:attribute', got {target!r}")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (what :meth:`register` added)."""
        self.check(name)
        del self._entries[name]

    def check(self, name: str) -> None:
        """Raise :class:`RegistryError` unless ``name`` is registered."""
        if name not in self._entries:
            hint = did_you_mean(name, self.names())
            plural = self.kind[:-1] + "ies" if self.kind.endswith("y") else self.kind + "s"
            raise RegistryError(f"unknown {self.kind} '{name}'{hint}; valid {plural}: {', '.join(self.names())}")

    def get(self, name: str) -> Any:
        """The registered object (class or function) for ``name``."""
        self.check(name)
        module, _, attr = self._entries[name].partition(":")
        return getattr(importlib.import_module(module), attr)


MODELS = Registry(
    "model",
    {
        "iquery": "contavsep.models.iquery:IQuerySeparator",
        "coseparation": "contavsep.models.coseparation:CoSeparationSeparator",
    },
)

STRATEGIES = Registry(
    "strategy",
    {
        "finetune": "contavsep.strategies.finetune:FineTune",
        "lwf": "contavsep.strategies.lwf:LwF",
        "ewc": "contavsep.strategies.ewc:EWC",
        "plop": "contavsep.strategies.plop:PLOP",
        "ewf": "contavsep.strategies.ewf:EWF",
        "avcil": "contavsep.strategies.avcil:AVCIL",
        "contavsep": "contavsep.strategies.contavsep:ContAVSep",
        "joint": "contavsep.strategies.joint:Joint",
    },
)
