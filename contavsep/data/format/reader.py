"""Open a dataset for training through a node-local, memory-mapped Arrow IPC cache.

The first process on a node that opens a dataset downloads its Parquet parts once, checks each
part's SHA-256 against the manifest, and writes one uncompressed Arrow IPC file named after the
manifest's content hash (temp name, then rename) under a file lock; every other process on the
node waits on the lock and then maps the same file. Arrays handed out are zero-copy views into
that mapping, so N trials on a node share one copy of the data in the page cache instead of
holding N copies in their own memory. A changed dataset has a new content hash, hence a new
cache file; stale files can be deleted at any time when no trial runs.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from filelock import FileLock

from contavsep import storage
from contavsep.data.format.manifest import DatasetError, read_manifest
from contavsep.data.format.schema import SPLITS, clip_schema

CACHE_DIR_ENV = "CONTAVSEP_CACHE_DIR"
# Rows per record batch of the cache file: bounds the memory of the one-time conversion and keeps
# list offsets (int32) far from overflow whatever the clip lengths.
CACHE_BATCH_ROWS = 64


def default_cache_dir() -> Path:
    """``$CONTAVSEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/contavsep``, else ``~/.cache/contavsep``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "contavsep"


NODE_PLACEHOLDER = "{node}"


def node_cache_dir(template: str, node: str) -> str | None:
    """``data.cache_dir`` for one node: its ``{node}`` replaced by the node's id, so nodes that
    share one filesystem (Ray's fake multi-node cluster, a shared home on an HPC cluster) still
    keep one cache each. ``""`` (the default folder) gives None.

    >>> node_cache_dir("/scratch/cache/{node}", "f00a")
    '/scratch/cache/f00a'
    """
    if not template:
        return None
    return template.replace(NODE_PLACEHOLDER, node)


def _expected_schema(manifest: dict[str, Any]) -> pa.Schema:
    dims = manifest["feature_dims"]
    return clip_schema(dims["object_dim"], dims["motion_tokens"], dims["motion_dim"])


def cache_path(manifest: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the cache file of a dataset lives: ``<cache_dir>/datasets/<content_hash>.arrow``."""
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / "datasets" / f"{manifest['content_hash']}.arrow"


def _build_cache(uri: str, manifest: dict[str, Any], path: Path, settings: storage.S3Settings | None) -> None:
    expected = _expected_schema(manifest)
    tmp = path.with_name(f"{storage.TEMP_PREFIX}{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, expected) as writer:
            for part in manifest["parts"]:
                part_uri = storage.join(uri, part["path"])
                data = storage.read_bytes(part_uri, settings)
                if hashlib.sha256(data).hexdigest() != part["sha256"]:
                    raise DatasetError(
                        f"{part_uri} does not match the SHA-256 in the manifest (changed after commit); rebuild the dataset"
                    )
                table = pq.read_table(pa.BufferReader(data))
                if not table.schema.equals(expected, check_metadata=False):
                    raise DatasetError(
                        f"{part_uri} does not have the schema its manifest declares; rebuild the dataset"
                    )
                for batch in table.to_batches(max_chunksize=CACHE_BATCH_ROWS):
                    writer.write_batch(batch.replace_schema_metadata(expected.metadata))
        # The conversion's buffers go back to the OS: the builder is a trial too, and should not
        # keep a private copy's worth of memory that the allocator would otherwise hold on to.
        pa.default_memory_pool().release_unused()
        with open(tmp, "rb") as f:  # durable before it becomes visible under the final name
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_dataset(
    uri: str,
    cache_dir: str | Path | None = None,
    settings: storage.S3Settings | None = None,
) -> ClipTable:
    """Open the complete dataset at ``uri`` through the node-local cache (built once per node).

    Raises :class:`DatasetError` for a missing/incomplete/other-version dataset and
    :class:`contavsep.storage.StorageError` for bad URIs or refused S3 credentials.
    """
    uri = str(storage.parse_uri(uri))
    manifest = read_manifest(uri, settings)
    check_part_sizes(uri, manifest, settings)  # a cache built earlier must not hide a damaged dataset
    path = cache_path(manifest, cache_dir)
    built = False
    if path.exists() and not _cache_intact(path, manifest):
        with FileLock(str(path) + ".lock"):
            if path.exists() and not _cache_intact(path, manifest):  # not rebuilt while we waited
                path.unlink()  # truncated or foreign: rebuilt below from the verified parts
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.exists():  # another process may have built it while we waited
                _build_cache(uri, manifest, path, settings)
                built = True
    return ClipTable(path, manifest, uri=uri, built=built)


def check_part_sizes(uri: str, manifest: dict[str, Any], settings: storage.S3Settings | None = None) -> None:
    """Compare every Parquet part's size in storage with the manifest's record (one metadata call;
    the SHA-256 is checked whenever a part is downloaded). Raises :class:`DatasetError` naming the
    first missing or resized part."""
    fs, root = storage.resolve(uri, settings)
    parts = manifest["parts"]
    with storage.storage_errors(uri, settings):
        infos = fs.get_file_info([f"{root.rstrip('/')}/{p['path']}" for p in parts])
    for part, info in zip(parts, infos):
        part_uri = storage.join(uri, part["path"])
        if info.type != pafs.FileType.File:
            raise DatasetError(
                f"{part_uri} is missing (the manifest lists it): restore it, or rebuild the dataset with --overwrite"
            )
        if info.size != part["bytes"]:
            raise DatasetError(
                f"{part_uri} is {info.size} bytes, its manifest records {part['bytes']} (changed or"
                f" damaged after commit): restore it, or rebuild the dataset with --overwrite"
            )


def _cache_intact(path: Path, manifest: dict[str, Any]) -> bool:
    """Whether a cache file's Arrow footer reads and its row count is the manifest's (a cheap check:
    a truncated or half-copied file fails it; the parts' SHA-256 was checked when it was built)."""
    try:
        with pa.memory_map(str(path), "r") as source:
            reader = pa.ipc.open_file(source)
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (pa.ArrowInvalid, OSError):
        return False
    return rows == sum(int(n) for n in manifest["totals"].values())


class ClipTable:
    """A memory-mapped clip dataset: manifest, class list, row indices, zero-copy accessors.

    Rows are numbered ``0 .. len(table) - 1`` across all splits. Arrays returned by the
    accessors are read-only views into the shared mapping (copy them before modifying).
    Pickling sends the cache path and manifest, not the data: an unpickled table (e.g. in a
    DataLoader worker) maps the same file.
    """

    def __init__(self, path: str | Path, manifest: dict[str, Any], *, uri: str = "", built: bool = False):
        self.path = Path(path)
        self.manifest = manifest
        self.uri = uri
        self.built = built  # True if this call downloaded the data into the cache
        self.classes: list[str] = list(manifest["classes"])
        self.sample_rate: int = int(manifest["audio"]["sample_rate"])
        self._open()

    def _open(self) -> None:
        source = pa.memory_map(str(self.path), "r")
        reader = pa.ipc.open_file(source)
        expected = _expected_schema(self.manifest)
        if not reader.schema.equals(expected, check_metadata=False):
            raise DatasetError(f"cache file {self.path} does not match its manifest's schema; delete it and reopen")
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        dims = self.manifest["feature_dims"]
        self._audio: list[np.ndarray] = []
        self._audio_offsets: list[np.ndarray] = []
        self._objects: list[np.ndarray] = []
        self._object_offsets: list[np.ndarray] = []
        self._motion: list[np.ndarray] = []
        clip_ids: list[str] = []
        class_ids: list[np.ndarray] = []
        splits: list[str] = []
        sources: list[str] = []
        rates: list[np.ndarray] = []
        for batch in batches:
            audio = batch.column("audio")
            objects = batch.column("object_features")
            motion = batch.column("motion_features")
            if audio.offset or objects.offset or motion.offset:  # never for arrays read from an IPC file
                raise DatasetError(f"cache file {self.path} holds sliced arrays; delete it and reopen")
            self._audio.append(audio.values.to_numpy(zero_copy_only=True))
            self._audio_offsets.append(audio.offsets.to_numpy(zero_copy_only=True))
            self._objects.append(objects.values.values.to_numpy(zero_copy_only=True).reshape(-1, dims["object_dim"]))
            self._object_offsets.append(objects.offsets.to_numpy(zero_copy_only=True))
            self._motion.append(
                motion.values.values.to_numpy(zero_copy_only=True).reshape(
                    -1, dims["motion_tokens"], dims["motion_dim"]
                )
            )
            clip_ids.extend(batch.column("clip_id").to_pylist())
            class_ids.append(batch.column("class_id").to_numpy())
            splits.extend(batch.column("split").to_pylist())
            sources.extend(batch.column("source").to_pylist())
            rates.append(batch.column("sample_rate").to_numpy())
        sizes = np.array([b.num_rows for b in batches], dtype=np.int64)
        self._batch_of = np.repeat(np.arange(len(batches), dtype=np.int32), sizes)
        self._local = (
            np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]) if len(sizes) else np.zeros(0, np.int64)
        )
        self._clip_ids = clip_ids
        self._class_ids = np.concatenate(class_ids).astype(np.int64) if class_ids else np.zeros(0, np.int64)
        self._splits = np.array(splits, dtype=object)
        self._sources = sources
        if rates and not (np.concatenate(rates) == self.sample_rate).all():
            raise DatasetError(f"dataset {self.uri}: some clips are not at the manifest's {self.sample_rate} Hz")
        self._source = source  # keep the mapping alive as long as the views
        self._row_of_clip = {c: i for i, c in enumerate(clip_ids)}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "manifest": self.manifest, "uri": self.uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["path"], state["manifest"], uri=state["uri"], built=False)

    def __len__(self) -> int:
        return len(self._clip_ids)

    def __repr__(self) -> str:
        totals = {s: int((self._splits == s).sum()) for s in SPLITS}
        return f"ClipTable({self.uri or self.path}, {len(self.classes)} classes, {totals})"

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    @property
    def class_ids(self) -> np.ndarray:
        """Class id of every row. Shape: :math:`(N,)` int64."""
        return self._class_ids

    def rows(self, split: str) -> np.ndarray:
        """Row indices of a split (``train`` | ``val`` | ``test``). Shape: :math:`(N_s,)` int64."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return np.flatnonzero(self._splits == split).astype(np.int64)

    def rows_by_class(self, split: str) -> dict[int, np.ndarray]:
        """``{class_id: row indices}`` of a split, for every class of the manifest (possibly empty)."""
        rows = self.rows(split)
        ids = self._class_ids[rows]
        return {c: rows[ids == c] for c in range(len(self.classes))}

    def row_of(self, clip_id: str) -> int:
        """Row index of a clip id."""
        try:
            return self._row_of_clip[clip_id]
        except KeyError:
            raise DatasetError(f"clip {clip_id!r} is not in dataset {self.uri}") from None

    def audio(self, row: int) -> np.ndarray:
        """The clip's mono PCM (read-only view). Shape: :math:`(S,)` int16."""
        b, i = self._batch_of[row], self._local[row]
        offsets = self._audio_offsets[b]
        return self._audio[b][offsets[i] : offsets[i + 1]]

    def object_features(self, row: int) -> np.ndarray:
        """Per-frame object features (read-only view). Shape: :math:`(F, D_o)` float32."""
        b, i = self._batch_of[row], self._local[row]
        offsets = self._object_offsets[b]
        return self._objects[b][offsets[i] : offsets[i + 1]]

    def motion_features(self, row: int) -> np.ndarray:
        """Motion features (read-only view). Shape: :math:`(T_m, D_m)` float32."""
        return self._motion[self._batch_of[row]][self._local[row]]

    def clip_id(self, row: int) -> str:
        return self._clip_ids[row]

    def class_id(self, row: int) -> int:
        return int(self._class_ids[row])

    def class_name(self, row: int) -> str:
        return self.classes[int(self._class_ids[row])]

    def split(self, row: int) -> str:
        return str(self._splits[row])

    def source(self, row: int) -> str:
        return self._sources[row]
