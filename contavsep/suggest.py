"""The one "did you mean" of the project: the closest valid name to a mistyped one.

Every refusal of an unknown name (a config key, a strategy, a sweep, a class list entry, a
space's metric) goes through here, so all of them suggest with the same cutoff.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

# difflib's similarity ratio a suggestion must reach. 0.6 (difflib's own default) keeps
# one-or-two-letter typos of names like 'strategy.lambda_ins' and drops unrelated names, which
# would mislead more than help.
CUTOFF = 0.6


def closest(name: str, options: Iterable[str]) -> str | None:
    """The valid option closest to ``name``, or None when none is close enough."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=CUTOFF)
    return match[0] if match else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest option, or "" when none is close enough."""
    match = closest(name, options)
    return f" (did you mean '{match}'?)" if match else ""
