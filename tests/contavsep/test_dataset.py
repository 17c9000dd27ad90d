"""Dataset format: writer (parts, manifest last, resume, overwrite), manifest checks, and the
node-local memory-mapped cache, against file:// and a real S3 server."""

from __future__ import annotations

import json
import multiprocessing
import pickle

import numpy as np
import pytest

from contavsep import storage
from contavsep.data.format.manifest import MANIFEST_NAME, DatasetError, read_manifest
from contavsep.data.format.reader import open_dataset
from contavsep.data.format.schema import SCHEMA_VERSION, ClipRecord
from contavsep.data.format.writer import DatasetWriter
from contavsep.storage import S3Settings, StorageError

CLASSES = ["accordion", "bagpipe", "bassoon"]
EXTRACTORS = {
    "object": {"name": "test-object", "revision": "0", "pretrained": False},
    "motion": {"name": "test-motion", "revision": "0", "pretrained": False},
}
AUDIO = {"sample_rate": 11025, "dtype": "int16"}


def make_record(i: int, split: str = "train", class_name: str | None = None) -> ClipRecord:
    rng = np.random.default_rng(i)
    return ClipRecord(
        clip_id=f"clip-{i:03d}",
        class_name=class_name or CLASSES[i % len(CLASSES)],
        split=split,
        audio=rng.integers(-30000, 30000, size=300 + 7 * i, dtype=np.int16),  # lengths differ per clip
        sample_rate=11025,
        object_features=rng.standard_normal((1 + i % 3, 512)).astype(np.float32),  # frames differ per clip
        motion_features=rng.standard_normal((8, 768)).astype(np.float32),
        source=f"test:{i}",
    )


def records(n: int = 14) -> list[ClipRecord]:
    splits = ["train", "train", "val", "test"]
    return [make_record(i, splits[i % 4]) for i in range(n)]


@pytest.fixture(params=["file", "s3"])
def where(request: pytest.FixtureRequest, tmp_path) -> tuple[str, S3Settings | None]:
    if request.param == "file":
        return f"file://{tmp_path}/ds", None
    server = request.getfixturevalue("s3_server")
    return server.new_bucket("ds") + "/datasets/one", server.settings


def write(uri: str, settings: S3Settings | None, recs: list[ClipRecord], **kwargs) -> dict:
    with DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS, part_rows=3, settings=settings, **kwargs) as w:
        for r in recs:
            w.add(r)
        return w.commit(extra={"note": "test"})


def test_roundtrip_through_cache(where, tmp_path) -> None:
    uri, settings = where
    recs = records()
    manifest = write(uri, settings, recs)
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["classes"] == CLASSES
    assert manifest["totals"] == {"train": 8, "val": 3, "test": 3}
    assert manifest["counts"]["train"] == {"accordion": 3, "bagpipe": 3, "bassoon": 2}
    assert manifest["extra"] == {"note": "test"}
    assert [(p["path"], p["rows"]) for p in manifest["parts"]] == [
        ("split=train/part-00000.parquet", 3),
        ("split=train/part-00001.parquet", 3),
        ("split=train/part-00002.parquet", 2),
        ("split=val/part-00000.parquet", 3),
        ("split=test/part-00000.parquet", 3),
    ]
    assert storage.list_dir(uri, settings) == ["manifest.json", "split=test", "split=train", "split=val"]

    table = open_dataset(uri, cache_dir=tmp_path / "cache", settings=settings)
    assert table.built and len(table) == len(recs)
    assert table.classes == CLASSES and table.sample_rate == 11025
    for r in recs:
        row = table.row_of(r.clip_id)
        np.testing.assert_array_equal(table.audio(row), r.audio)
        np.testing.assert_array_equal(table.object_features(row), r.object_features)
        np.testing.assert_array_equal(table.motion_features(row), r.motion_features)
        assert (table.clip_id(row), table.class_name(row), table.split(row), table.source(row)) == (
            r.clip_id,
            r.class_name,
            r.split,
            r.source,
        )
        assert table.class_id(row) == CLASSES.index(r.class_name)
    audio = table.audio(0)
    assert audio.dtype == np.int16 and not audio.flags.writeable  # a view of the shared mapping
    by_class = table.rows_by_class("val")
    assert sorted(by_class) == [0, 1, 2]
    assert sorted(np.concatenate(list(by_class.values())).tolist()) == sorted(table.rows("val").tolist())
    assert all(table.split(r) == "val" and table.class_id(r) == c for c, rows in by_class.items() for r in rows)

    again = open_dataset(uri, cache_dir=tmp_path / "cache", settings=settings)
    assert not again.built and again.path == table.path  # keyed by the content hash
    clone = pickle.loads(pickle.dumps(table))  # what a DataLoader worker gets: a path, not the data
    assert len(pickle.dumps(table)) < 20_000
    np.testing.assert_array_equal(clone.audio(5), table.audio(5))


def test_add_validates_with_clear_errors(tmp_path) -> None:
    w = DatasetWriter(f"file://{tmp_path}/ds", CLASSES, audio=AUDIO, extractors=EXTRACTORS)
    good = make_record(1)
    cases = [
        (dict(class_name="kazoo"), "class 'kazoo' is not in the dataset's class list"),
        (dict(split="training"), "split must be one of"),
        (dict(audio=good.audio.astype(np.float32)), "audio must be a non-empty 1-D int16 array, got float32"),
        (dict(sample_rate=16000), "differs from the dataset's 11025 Hz"),
        (dict(object_features=np.zeros((2, 256), np.float32)), "object_features must be float32 (n_frames >= 1, 512)"),
        (dict(motion_features=np.zeros((8, 768), np.float64)), "motion_features must be float32 (8, 768), got float64"),
        (dict(motion_features=np.full((8, 768), np.nan, np.float32)), "NaN or inf"),
    ]
    for change, fragment in cases:
        with pytest.raises(DatasetError) as info:
            w.add(ClipRecord(**{**good.__dict__, **change}))
        assert fragment in str(info.value) and "clip 'clip-001'" in str(info.value)
    w.add(good)
    with pytest.raises(DatasetError, match="duplicate clip_id"):
        w.add(good)
    with pytest.raises(DatasetError, match="'name' .* and 'pretrained'"):
        DatasetWriter(f"file://{tmp_path}/x", CLASSES, audio=AUDIO, extractors={"object": {"name": "x"}})


def test_interrupted_write_is_refused_then_resumed(where, tmp_path) -> None:
    uri, settings = where
    recs = records(12)
    with pytest.raises(RuntimeError, match="extractor crashed"):
        with DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS, part_rows=2, settings=settings) as w:
            for r in recs[:7]:
                w.add(r)
            raise RuntimeError("extractor crashed")
    assert not storage.exists(storage.join(uri, MANIFEST_NAME), settings)
    with pytest.raises(DatasetError, match="incomplete dataset: .*manifest.json is missing"):
        open_dataset(uri, cache_dir=tmp_path / "cache", settings=settings)

    w = DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS, part_rows=2, resume=True, settings=settings)
    done = w.existing_clip_ids()
    assert done and done <= {r.clip_id for r in recs[:7]}  # flushed parts survive, buffered rows do not
    for r in recs:
        if r.clip_id not in done:
            w.add(r)
    manifest = w.commit()
    assert sum(manifest["totals"].values()) == len(recs)
    table = open_dataset(uri, cache_dir=tmp_path / "cache", settings=settings)
    assert sorted(table.clip_id(i) for i in range(len(table))) == sorted(r.clip_id for r in recs)


def test_resume_false_clears_old_parts_and_classes_must_match(tmp_path) -> None:
    uri = f"file://{tmp_path}/ds"
    with pytest.raises(KeyboardInterrupt):
        with DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS, part_rows=1) as w:
            w.add(make_record(0))
            raise KeyboardInterrupt
    with pytest.raises(DatasetError, match="another class list"):
        DatasetWriter(uri, list(reversed(CLASSES)), audio=AUDIO, extractors=EXTRACTORS, resume=True)
    w = DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS, resume=False)
    assert w.existing_clip_ids() == set()
    assert storage.list_dir(uri) == []  # the old parts are gone
    w.add(make_record(5))
    assert w.commit()["totals"]["train"] == 1


def test_complete_dataset_is_not_overwritten_unless_asked(tmp_path) -> None:
    uri = f"file://{tmp_path}/ds"
    first = write(uri, None, records(6))
    with pytest.raises(DatasetError, match="complete dataset already exists .* overwrite=True"):
        DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS)
    assert read_manifest(uri)["content_hash"] == first["content_hash"]
    # overwrite: the old manifest goes first, so a failed rewrite leaves an incomplete dataset, never the old one
    with pytest.raises(RuntimeError):
        with DatasetWriter(uri, CLASSES, audio=AUDIO, extractors=EXTRACTORS, overwrite=True, part_rows=1) as w:
            w.add(make_record(40))  # one new part written
            raise RuntimeError("interrupted")
    with pytest.raises(DatasetError, match="incomplete"):
        read_manifest(uri)
    second = write(uri, None, records(4), overwrite=True)
    assert second["content_hash"] != first["content_hash"]
    assert sum(second["totals"].values()) == 4


def test_same_content_same_hash_across_backends(s3_server, s3_bucket, tmp_path) -> None:
    a = write(f"file://{tmp_path}/a", None, records(8))
    b = write(storage.join(s3_bucket, "b"), s3_server.settings, records(8))
    c = write(f"file://{tmp_path}/c", None, records(9))
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]


def test_unknown_schema_version_and_tampering_are_refused(tmp_path) -> None:
    uri = f"file://{tmp_path}/ds"
    write(uri, None, records(6))
    manifest_path = tmp_path / "ds" / MANIFEST_NAME
    original = manifest_path.read_text()
    manifest_path.write_text(json.dumps({**json.loads(original), "schema_version": 99}))
    with pytest.raises(DatasetError) as info:
        open_dataset(uri, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "schema version 99" in message and f"reads version {SCHEMA_VERSION}" in message and "rebuild" in message
    manifest_path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        open_dataset(uri, cache_dir=tmp_path / "cache")
    manifest_path.write_text(original)
    part = tmp_path / "ds" / "split=train" / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="part-00000.parquet does not match the SHA-256"):
        open_dataset(uri, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "datasets").glob("*.arrow"))  # no half-built cache file


def test_a_cache_does_not_hide_a_damaged_part_and_a_damaged_cache_is_rebuilt(tmp_path) -> None:
    """Opening a cached dataset still compares each part's size with the manifest (a truncated
    part is named even though the cache holds its rows); a truncated cache file is rebuilt."""
    uri = f"file://{tmp_path}/ds"
    write(uri, None, records(6))
    first = open_dataset(uri, cache_dir=tmp_path / "cache")
    assert first.built and len(first) == 6
    cache_file = first.path
    del first
    cache_file.write_bytes(cache_file.read_bytes()[:-64])  # e.g. a disk filled up while copying
    again = open_dataset(uri, cache_dir=tmp_path / "cache")
    assert again.built and len(again) == 6 and np.array_equal(again.audio(0), make_record(0).audio)
    part = tmp_path / "ds" / "split=train" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"part-00000.parquet is \d+ bytes, its manifest records \d+"):
        open_dataset(uri, cache_dir=tmp_path / "cache")
    part.unlink()
    with pytest.raises(DatasetError, match="part-00000.parquet is missing"):
        open_dataset(uri, cache_dir=tmp_path / "cache")


def test_refused_s3_keys_on_open(s3_server, s3_bucket, tmp_path) -> None:
    uri = storage.join(s3_bucket, "ds")
    write(uri, s3_server.settings, records(4))
    bad = S3Settings(
        endpoint_url=s3_server.settings.endpoint_url,
        access_key="nobody-at-all",
        secret_key="x" * 20,
        keys_from="CONTAVSEP_S3_ACCESS_KEY / CONTAVSEP_S3_SECRET_KEY",
    )
    with pytest.raises(StorageError, match="refused the credentials .*CONTAVSEP_S3_ACCESS_KEY"):
        open_dataset(uri, cache_dir=tmp_path / "cache", settings=bad)


def _open_in_child(uri: str, cache_dir: str, barrier, out) -> None:
    barrier.wait()
    table = open_dataset(uri, cache_dir=cache_dir)
    out.put((table.built, str(table.path), int(table.audio(3).astype(np.int64).sum())))


def test_concurrent_openers_download_once(tmp_path) -> None:
    uri = f"file://{tmp_path}/ds"
    write(uri, None, records(10))
    ctx = multiprocessing.get_context("fork")  # fast to start; children only read local files
    n = 3
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_in_child, args=(uri, str(tmp_path / "cache"), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(built for built, _, _ in results) == [False, False, True]
    assert len({path for _, path, _ in results}) == 1 and len({s for _, _, s in results}) == 1
    names = sorted(p.name for p in (tmp_path / "cache" / "datasets").iterdir())
    assert [n for n in names if not n.endswith(".lock")] == [results[0][1].rsplit("/", 1)[-1]]  # no temp files left
