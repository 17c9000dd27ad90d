"""The error of a sweep that cannot start or continue as asked."""

from __future__ import annotations

from contavsep_platform.errors import UserError


class SweepError(UserError):
    """A sweep cannot start or continue as asked; the message says what to do instead."""
