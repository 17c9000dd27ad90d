"""The one signature of "the same configuration" (as dora's XP signature): a short content hash
of a mapping of dotted keys to values.

It serves everything that asks whether two runs are the same configuration:

- the search's configuration id (``contavsep_platform.search.configuration_id``, 8 hex digits):
  the repeats of a configuration form one group, and a proposal equal to an earlier one is
  recognised, also after a sweep resumes;
- the report's configuration id of a logged run (from its MLflow params, 8 digits);
- the key of a shared step 0 (:func:`contavsep.first_step.key_of`, 24 digits: a content address
  on storage, where a collision would load another configuration's weights).

The text hashed is the mapping as canonical JSON (keys sorted, values JSON or ``str``), so a
mapping's order never changes its signature. Which keys go in is each caller's decision, and
its docstring says which; a sweep's resume check compares its recorded space key by key instead
(``contavsep_platform.spaces.fingerprint``), so that a refusal can name what changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def signature(values: Mapping[str, Any], length: int = 8) -> str:
    """The first ``length`` hex digits of the SHA-1 of ``values`` as canonical JSON.

    SHA-1 because the search's configuration ids have been SHA-1 since the first sweep: a sweep
    started before this module existed resumes with the same ids (it is a content hash here,
    not a security boundary)."""
    if not 1 <= length <= 40:
        raise ValueError(f"length must be 1..40 hex digits, got {length}")
    text = json.dumps(dict(values), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]
