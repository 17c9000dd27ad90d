"""The error of the local services: one that could not be started, reached or stopped."""

from __future__ import annotations

from contavsep_platform.errors import UserError


class ServiceError(UserError):
    """A service could not be started, reached or stopped; the message names what to do."""
