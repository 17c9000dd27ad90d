"""The error of a search space that cannot be used."""

from __future__ import annotations

from contavsep.config import ConfigError
from contavsep_platform.errors import PlatformError


class SpaceError(ConfigError, PlatformError):
    """A search space file is invalid; the message names the file, the entry and the fix."""
