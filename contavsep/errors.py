"""The library's error family: every error raised on purpose derives from :class:`ContavsepError`.

An error of this family means the input (a config, a dataset, a checkpoint, a path, weights) or
the environment (a missing renderer, an unreachable store) is not what the code needs, and its
message says what to change. A front end prints it as one line; anything else that escapes is a
bug and keeps its traceback. Each concrete error also keeps the built-in base it always had
(``ValueError``, ``KeyError``, ...), so code that caught those still does.

The classes live next to the code that raises them (``ConfigError`` in :mod:`contavsep.config`,
``StorageError`` in :mod:`contavsep.storage`, ...); this module holds only the base, so that
importing it never imports anything else.
"""

from __future__ import annotations


class ContavsepError(Exception):
    """Base of the errors the library raises on purpose; the message says what to do instead."""
