"""``manifest.json``: what makes a folder of Parquet parts a complete, versioned dataset.

The writer puts it last and atomically; its presence is the commit mark. It records the schema
version, the ordered class list (class ids index it), counts per split and class, feature
extractors, audio settings, every part with its size and SHA-256, and a content hash over all
parts. The content hash keys the node-local cache, so two URIs holding the same bytes share one
cached copy and any change to the data gives a new key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from contavsep import storage
from contavsep.data.format.schema import SCHEMA_VERSION, SPLITS
from contavsep.errors import ContavsepError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "contavsep.clips"
REQUIRED_KEYS = (
    "format",
    "schema_version",
    "classes",
    "counts",
    "audio",
    "extractors",
    "parts",
    "content_hash",
    "feature_dims",
)


class DatasetError(ContavsepError):
    """A dataset is missing, incomplete, of another version or malformed; one line says what to do."""


def part_name(split: str, index: int) -> str:
    """Relative path of a Parquet part: ``split=<split>/part-<index:05d>.parquet``."""
    return f"split={split}/part-{index:05d}.parquet"


def content_hash(classes: list[str], parts: list[dict[str, Any]]) -> str:
    """SHA-256 (hex) over the schema version, the class list and each part's path and SHA-256."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "classes": list(classes),
        "parts": sorted((p["path"], p["sha256"]) for p in parts),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_manifest(uri: str, settings: storage.S3Settings | None = None) -> dict[str, Any]:
    """Load and check the manifest of the dataset at ``uri``.

    Raises :class:`DatasetError` when the dataset is absent, incomplete (parts without a
    manifest), of another schema version, or malformed; the message names the file and the fix.
    """
    manifest_uri = storage.join(uri, MANIFEST_NAME)
    try:
        raw = storage.read_bytes(manifest_uri, settings)
    except (FileNotFoundError, NotADirectoryError):
        try:
            listed = storage.list_dir(uri, settings)
        except NotADirectoryError:
            raise DatasetError(
                f"no dataset at {uri}: that is a file; a dataset URI names the folder holding {MANIFEST_NAME}"
            ) from None
        if listed:
            raise DatasetError(
                f"{uri} is an incomplete dataset: {manifest_uri} is missing (a write that did not finish);"
                f" rebuild it (contavsep data synth --overwrite) or resume the ingestion"
            ) from None
        raise DatasetError(
            f"no dataset at {uri}: {manifest_uri} does not exist; check the dataset URI (data.uri)"
        ) from None
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{manifest_uri} is not valid JSON ({exc}); rebuild the dataset") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{manifest_uri} must hold a JSON object; rebuild the dataset")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DatasetError(
            f"{manifest_uri} has schema version {version!r} but this contavsep reads version {SCHEMA_VERSION};"
            f" rebuild the dataset with this contavsep (contavsep data synth / ingest) or use a matching release"
        )
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing or manifest.get("format") != FORMAT_NAME:
        what = (
            f"lacks {', '.join(missing)}" if missing else f"has format {manifest.get('format')!r}, not {FORMAT_NAME!r}"
        )
        raise DatasetError(
            f"{manifest_uri} {what}; it was not written by contavsep's DatasetWriter: rebuild the dataset"
        )
    unknown = sorted(set(manifest["counts"]) - set(SPLITS))
    if unknown:
        raise DatasetError(f"{manifest_uri} has unknown splits {unknown}; expected {list(SPLITS)}")
    expected = content_hash(manifest["classes"], manifest["parts"])
    if manifest["content_hash"] != expected:
        raise DatasetError(
            f"{manifest_uri}: content_hash does not match its part list (edited by hand?); rebuild the dataset"
        )
    return manifest
