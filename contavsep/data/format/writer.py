"""Write a clip dataset: validated records -> Parquet parts per split -> ``manifest.json`` last.

Layout under the dataset URI::

    split=train/part-00000.parquet   (part_rows clips each, zstd, one part written atomically)
    split=val/part-00000.parquet
    split=test/part-00000.parquet
    manifest.json                    (written last, atomically: the commit mark)

A folder without the manifest is an incomplete dataset that readers refuse. Ingestion that was
interrupted resumes with ``resume=True`` (parts already written are kept; ``existing_clip_ids``
tells what to skip); ``resume=False`` clears old parts of an incomplete dataset. A complete
dataset is never overwritten unless ``overwrite=True``, and then its manifest goes first, so no
reader can take the half-replaced folder for a complete dataset.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections import defaultdict
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contavsep import storage
from contavsep.data.format.manifest import (
    FORMAT_NAME,
    MANIFEST_NAME,
    DatasetError,
    content_hash,
    part_name,
)
from contavsep.data.format.schema import (
    SCHEMA_VERSION,
    SPLITS,
    VERSION_KEY,
    ClipRecord,
    clip_schema,
    feature_dims,
)

_PART_RE = re.compile(r"^part-(\d{5})\.parquet$")


def _check_extractors(extractors: dict) -> None:
    for kind in ("object", "motion"):
        entry = extractors.get(kind) if isinstance(extractors, dict) else None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("pretrained"), bool)
        ):
            raise DatasetError(
                f"extractors['{kind}'] must be a dict with 'name' (str) and 'pretrained' (bool), e.g."
                f" {{'name': 'openai/clip-vit-base-patch32', 'revision': '...', 'pretrained': True}}; got {entry!r}"
            )
    try:
        json.dumps(extractors)
    except TypeError as exc:
        raise DatasetError(f"extractors must be JSON-serialisable: {exc}") from None


class DatasetWriter:
    """Write :class:`ClipRecord` s to a dataset at ``uri`` (``file:///...`` or ``s3://...``).

    Use as a context manager: on an exception nothing is committed (parts written so far stay,
    resumable; rows still buffered are dropped); a clean exit commits if :meth:`commit` was not
    called. ``audio`` is recorded in the manifest and must hold ``sample_rate``; ``extractors``
    names the object and motion feature extractors (``name``, ``revision``, ``pretrained``).
    """

    def __init__(
        self,
        uri: str,
        classes: list[str],
        *,
        audio: dict,
        extractors: dict,
        description: str = "",
        resume: bool = False,
        part_rows: int = 256,
        overwrite: bool = False,
        object_dim: int = 512,
        motion_tokens: int = 8,
        motion_dim: int = 768,
        settings: storage.S3Settings | None = None,
    ):
        self.uri = str(storage.parse_uri(uri))
        self.settings = settings
        classes = list(classes)
        if not classes or any(not isinstance(c, str) or not c for c in classes):
            raise DatasetError(f"classes must be a non-empty list of non-empty names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise DatasetError(f"classes must be unique, got duplicates in {classes!r}")
        if len(classes) > np.iinfo(np.int16).max:
            raise DatasetError(f"at most {np.iinfo(np.int16).max} classes fit the int16 class_id column")
        if not isinstance(audio, dict) or not isinstance(audio.get("sample_rate"), int) or audio["sample_rate"] <= 0:
            raise DatasetError(f"audio must be a dict with a positive int 'sample_rate', got {audio!r}")
        _check_extractors(extractors)
        if part_rows < 1:
            raise DatasetError(f"part_rows must be >= 1, got {part_rows}")
        self.classes = classes
        self.audio = dict(audio)
        self.extractors = extractors
        self.description = description
        self.part_rows = part_rows
        self.schema = clip_schema(object_dim, motion_tokens, motion_dim)
        self._class_index = {c: i for i, c in enumerate(classes)}
        self._buffers: dict[str, list[ClipRecord]] = {s: [] for s in SPLITS}
        self._next_part = {s: 0 for s in SPLITS}
        self._parts: list[dict[str, Any]] = []  # parts of this run and of a resumed one, with sha256
        self._resumed_parts: list[str] = []  # relative paths whose sha256 is computed at commit
        self._ids: set[str] = set()
        self._existing_ids: set[str] = set()
        self._counts: dict[str, dict[str, int]] = {s: defaultdict(int) for s in SPLITS}
        self._done = False

        storage.ensure_bucket(self.uri, settings)  # also the early credential check on S3
        manifest_uri = storage.join(self.uri, MANIFEST_NAME)
        if storage.exists(manifest_uri, settings):
            if not overwrite:
                raise DatasetError(
                    f"a complete dataset already exists at {self.uri} ({MANIFEST_NAME} present);"
                    f" pass overwrite=True (CLI: --overwrite) to replace it"
                )
            # The manifest goes first: from here on the folder reads as incomplete, never as the old dataset.
            storage.delete_prefix(manifest_uri, settings)
            self._clear_parts()
        elif resume:
            self._scan_existing_parts()
        else:
            self._clear_parts()

    # ------------------------------------------------------------------------------------------
    def _clear_parts(self) -> None:
        # Only what this writer owns: never the whole prefix (a mistyped URI must not wipe a bucket).
        for split in SPLITS:
            storage.delete_prefix(storage.join(self.uri, f"split={split}"), self.settings)

    def _scan_existing_parts(self) -> None:
        for split in SPLITS:
            split_uri = storage.join(self.uri, f"split={split}")
            for name in storage.list_dir(split_uri, self.settings):
                match = _PART_RE.match(name)
                if not match:
                    continue
                rel = f"split={split}/{name}"
                with storage.open_input_file(storage.join(self.uri, rel), self.settings) as f:
                    parquet = pq.ParquetFile(f)
                    schema = parquet.schema_arrow
                    if (
                        schema.metadata is None
                        or schema.metadata.get(VERSION_KEY) != str(SCHEMA_VERSION).encode()
                        or feature_dims(schema) != feature_dims(self.schema)
                    ):
                        raise DatasetError(
                            f"cannot resume: {storage.join(self.uri, rel)} has another schema version or feature sizes;"
                            f" start over with resume=False"
                        )
                    cols = parquet.read(columns=["clip_id", "class_name", "class_id", "split"]).to_pydict()
                for clip_id, name_, cid, sp in zip(
                    cols["clip_id"], cols["class_name"], cols["class_id"], cols["split"]
                ):
                    if self._class_index.get(name_) != cid or sp != split:
                        raise DatasetError(
                            f"cannot resume: {storage.join(self.uri, rel)} was written with another class list or split"
                            f" (clip {clip_id!r}: {name_!r} id {cid}); resume with the same classes or start over"
                        )
                    self._ids.add(clip_id)
                    self._counts[split][name_] += 1
                self._existing_ids.update(cols["clip_id"])
                self._resumed_parts.append(rel)
                self._next_part[split] = max(self._next_part[split], int(match.group(1)) + 1)

    def existing_clip_ids(self) -> set[str]:
        """Clip ids in parts already written by an earlier, interrupted run (``resume=True``)."""
        return set(self._existing_ids)

    # ------------------------------------------------------------------------------------------
    def _check(self, r: ClipRecord) -> None:
        cid = r.clip_id if isinstance(r.clip_id, str) else repr(r.clip_id)

        def bad(what: str) -> DatasetError:
            return DatasetError(f"clip {cid!r}: {what}")

        if not isinstance(r.clip_id, str) or not r.clip_id:
            raise bad("clip_id must be a non-empty string")
        if r.class_name not in self._class_index:
            raise bad(f"class {r.class_name!r} is not in the dataset's class list {self.classes}")
        if r.split not in SPLITS:
            raise bad(f"split must be one of {list(SPLITS)}, got {r.split!r}")
        if r.sample_rate != self.audio["sample_rate"]:
            raise bad(
                f"sample_rate {r.sample_rate} differs from the dataset's {self.audio['sample_rate']} Hz; resample first"
            )
        a = r.audio
        if not isinstance(a, np.ndarray) or a.dtype != np.int16 or a.ndim != 1 or a.size == 0:
            raise bad(f"audio must be a non-empty 1-D int16 array, got {_describe(a)}")
        obj_dim, m_tokens, m_dim = feature_dims(self.schema)
        o = r.object_features
        if (
            not isinstance(o, np.ndarray)
            or o.dtype != np.float32
            or o.ndim != 2
            or o.shape[0] < 1
            or o.shape[1] != obj_dim
        ):
            raise bad(f"object_features must be float32 (n_frames >= 1, {obj_dim}), got {_describe(o)}")
        m = r.motion_features
        if not isinstance(m, np.ndarray) or m.dtype != np.float32 or m.shape != (m_tokens, m_dim):
            raise bad(f"motion_features must be float32 ({m_tokens}, {m_dim}), got {_describe(m)}")
        if not (np.isfinite(o).all() and np.isfinite(m).all()):
            raise bad("features contain NaN or inf")
        if not isinstance(r.source, str):
            raise bad(f"source must be a string, got {type(r.source).__name__}")
        if r.clip_id in self._ids:
            raise bad("duplicate clip_id (already written or added)")

    def add(self, record: ClipRecord) -> None:
        """Validate and buffer one clip; a Parquet part is written when a split has ``part_rows``."""
        if self._done:
            raise DatasetError(f"the writer of {self.uri} is closed; create a new one to add clips")
        self._check(record)
        self._ids.add(record.clip_id)
        buffer = self._buffers[record.split]
        buffer.append(record)
        if len(buffer) >= self.part_rows:
            self._flush(record.split)

    def _table(self, records: list[ClipRecord]) -> pa.Table:
        obj_dim, m_tokens, m_dim = feature_dims(self.schema)
        audio_len = np.array([r.audio.size for r in records], dtype=np.int64)
        if audio_len.sum() >= 2**31:
            raise DatasetError(
                f"one part would hold more than 2**31 audio samples; lower part_rows (now {self.part_rows})"
            )
        frames = np.array([r.object_features.shape[0] for r in records], dtype=np.int64)
        audio = pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(audio_len)]).astype(np.int32)),
            pa.array(np.concatenate([r.audio for r in records])),
        )
        objects = pa.ListArray.from_arrays(
            pa.array(np.concatenate([[0], np.cumsum(frames)]).astype(np.int32)),
            pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([r.object_features.reshape(-1) for r in records])), obj_dim
            ),
        )
        motion = pa.FixedSizeListArray.from_arrays(
            pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([r.motion_features.reshape(-1) for r in records])), m_dim
            ),
            m_tokens,
        )
        columns = [
            pa.array([r.clip_id for r in records], pa.string()),
            pa.array([r.class_name for r in records], pa.string()),
            pa.array([self._class_index[r.class_name] for r in records], pa.int16()),
            pa.array([r.split for r in records], pa.string()),
            audio,
            pa.array([r.sample_rate for r in records], pa.int32()),
            objects,
            motion,
            pa.array([r.source for r in records], pa.string()),
        ]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _flush(self, split: str) -> None:
        records = self._buffers[split]
        if not records:
            return
        sink = pa.BufferOutputStream()
        pq.write_table(self._table(records), sink, compression="zstd", row_group_size=len(records))
        data = sink.getvalue()
        rel = part_name(split, self._next_part[split])
        storage.write_bytes_atomic(storage.join(self.uri, rel), data, self.settings)
        self._parts.append(
            {
                "path": rel,
                "split": split,
                "rows": len(records),
                "bytes": data.size,
                "sha256": hashlib.sha256(memoryview(data)).hexdigest(),
            }
        )
        for r in records:
            self._counts[split][r.class_name] += 1
        self._next_part[split] += 1
        self._buffers[split] = []

    # ------------------------------------------------------------------------------------------
    def commit(self, extra: dict | None = None) -> dict:
        """Flush, hash every part, write ``manifest.json`` last and atomically; return the manifest.

        ``extra`` (JSON-serialisable) is stored under the manifest's ``"extra"`` key.
        """
        if self._done:
            raise DatasetError(f"the writer of {self.uri} is already closed")
        for split in SPLITS:
            self._flush(split)
        for rel in self._resumed_parts:
            data = storage.read_bytes(storage.join(self.uri, rel), self.settings)
            rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
            self._parts.append(
                {
                    "path": rel,
                    "split": rel.split("/")[0].removeprefix("split="),
                    "rows": rows,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        self._resumed_parts = []
        if not self._parts:
            raise DatasetError(f"nothing to commit at {self.uri}: no clips were added")
        parts = sorted(self._parts, key=lambda p: (SPLITS.index(p["split"]), p["path"]))
        counts = {s: {c: int(self._counts[s].get(c, 0)) for c in self.classes} for s in SPLITS}
        obj_dim, m_tokens, m_dim = feature_dims(self.schema)
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "description": self.description,
            "classes": self.classes,
            "counts": counts,
            "totals": {s: sum(counts[s].values()) for s in SPLITS},
            "audio": self.audio,
            "extractors": self.extractors,
            "feature_dims": {"object_dim": obj_dim, "motion_tokens": m_tokens, "motion_dim": m_dim},
            "parts": parts,
            "content_hash": content_hash(self.classes, parts),
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "writer": {"pyarrow": pa.__version__},
            "extra": extra or {},
        }
        try:
            body = json.dumps(manifest, indent=1).encode()
        except TypeError as exc:
            raise DatasetError(f"commit(extra=...) must be JSON-serialisable: {exc}") from None
        storage.write_bytes_atomic(storage.join(self.uri, MANIFEST_NAME), body, self.settings)
        self._done = True
        return manifest

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._done:
                self.commit()
        else:
            self._done = True  # parts stay for a resumed run; no manifest


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__
