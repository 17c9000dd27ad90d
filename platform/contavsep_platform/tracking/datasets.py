"""The dataset as an MLflow dataset input (the runs table's Dataset column)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag

from contavsep import storage

DATASET_CONTEXT_TAG = "mlflow.data.context"  # MLflow's input tag for what a dataset was used for


def dataset_input(uri: str, manifest: Mapping[str, Any]) -> DatasetInput:
    """The dataset at ``uri`` as an MLflow dataset input (the runs table's Dataset column).

    name = the dataset folder's name; digest = the manifest's content hash cut to 12 hex digits
    (MLflow stores at most 36 and the runs table prints it next to the name; the full hash is in
    the profile and an input tag); source = the normalised storage URI (storage URIs hold no
    credentials: keys live in their 0600 file); profile = classes and clip counts; input tags =
    the context ("train"), the full content hash and each feature extractor's name@revision.
    """
    normalised = str(storage.parse_uri(uri))
    full_hash = str(manifest.get("content_hash", ""))
    profile = {
        "content_hash": full_hash,
        "classes": len(manifest.get("classes") or []),
        "clips": manifest.get("totals") or {},
        "sample_rate": (manifest.get("audio") or {}).get("sample_rate"),
    }
    dataset = Dataset(
        name=normalised.rstrip("/").rsplit("/", 1)[-1] or normalised,
        digest=full_hash[:12] or "unknown",
        source_type="s3" if normalised.startswith("s3://") else "local",
        source=json.dumps({"uri": normalised}),
        profile=json.dumps(profile),
    )
    tags = {DATASET_CONTEXT_TAG: "train", "contavsep.content_hash": full_hash}
    for role, extractor in sorted((manifest.get("extractors") or {}).items()):
        if isinstance(extractor, Mapping):
            revision = extractor.get("commit") or extractor.get("revision")
            tags[f"contavsep.extractor.{role}"] = f"{extractor.get('name', '?')}" + (f"@{revision}" if revision else "")
    return DatasetInput(dataset, [InputTag(k, str(v)[:500]) for k, v in tags.items()])
