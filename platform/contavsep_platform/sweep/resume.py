"""The space record of a sweep (its space's and dataset's fingerprint next to Tune's state) and
the check that ``--resume`` continues a sweep with the space it was started with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from contavsep import storage
from contavsep_platform.spaces import SearchSpace, fingerprint, fingerprint_differences
from contavsep_platform.sweep.error import SweepError

# Next to Tune's state: the fingerprint of the space (and dataset) a sweep was started with.
SPACE_RECORD = "contavsep-space.json"


def space_record(space: SearchSpace, manifest: Mapping[str, Any]) -> dict[str, str]:
    """The fingerprint of a sweep's space and dataset content (stored as :data:`SPACE_RECORD`)."""
    return {**fingerprint(space), "data.content_hash": str(manifest.get("content_hash", ""))}


def check_resumed_space(
    sweep_uri: str, space: SearchSpace, manifest: Mapping[str, Any], s3: storage.S3Settings | None
) -> None:
    """Refuse to ``--resume`` a sweep with a space (or ``--set`` values, or dataset content) other
    than the one it was started with: Tune would run the rest of the old plan with the new
    settings and `report` would mix the two. Sweeps without a record are not checked."""
    record_uri = storage.join(sweep_uri, SPACE_RECORD)
    if not storage.exists(record_uri, s3):
        return
    stored = json.loads(storage.read_bytes(record_uri, s3))
    if "select_on" not in stored:
        raise SweepError(
            f"sweep {sweep_uri.rstrip('/').rsplit('/', 1)[-1]!r} was started before sweeps selected on validation"
            f" sets (its trials have none, so its choice could only be made on test numbers); start a new --name"
        )
    diff = fingerprint_differences(stored, space_record(space, manifest))
    if diff:
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise SweepError(
            f"--resume with another space than sweep {sweep_uri.rstrip('/').rsplit('/', 1)[-1]!r} was"
            f" started with: {'; '.join(diff[:3])}{more}; resume with the original space file and --set"
            f" values, or start a new --name"
        )
