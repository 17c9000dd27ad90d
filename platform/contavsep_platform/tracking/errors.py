"""What an MLflow failure means: retry later (transient) or give up (the request is wrong), the
error a new sweep gets when the server cannot be used, and an exception in one short line.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException

from contavsep_platform.errors import UserError

# Errors that mean "the request itself is wrong": retrying cannot help, so the item is dropped.
_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "BAD_REQUEST",
        "INVALID_STATE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "NOT_FOUND",
        "MALFORMED_REQUEST",
    }
)


class TrackingUnavailableError(UserError):
    """The tracking server cannot be used for a new sweep (unreachable or refusing it)."""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` means "the server is unreachable or overloaded, try again later"."""
    if isinstance(exc, MlflowException):
        # Connection refused / timeouts / 5xx arrive as INTERNAL_ERROR or TEMPORARILY_UNAVAILABLE.
        return exc.error_code not in _PERMANENT_CODES
    return isinstance(exc, OSError)  # requests' ConnectionError and Timeout are OSErrors
