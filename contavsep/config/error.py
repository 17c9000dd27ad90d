"""The error of an invalid configuration key or value."""

from __future__ import annotations

from contavsep.errors import ContavsepError


class ConfigError(ContavsepError, ValueError):
    """A configuration key or value is invalid; the message says what to change."""
