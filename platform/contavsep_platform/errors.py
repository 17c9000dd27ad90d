"""The platform's error family, part of the library's (:class:`contavsep.errors.ContavsepError`).

The CLI catches the library's base and prints one line with exit status 2: every error of the
family means the input or the environment is not what a command needs, and says what to do.
:data:`USER_ERRORS` adds the OS errors about paths the user gave (a file where a folder should
be, no permission), which the standard library raises.
"""

from __future__ import annotations

from contavsep.errors import ContavsepError


class PlatformError(ContavsepError):
    """Base of the errors the platform raises on purpose (services, sweeps, tracking, reports)."""


class UserError(PlatformError):
    """Bad input from the user (an argument, a name, a folder): one line, exit status 2."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ContavsepError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
