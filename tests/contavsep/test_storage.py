"""Storage URIs and helpers against file:// and a real S3 server (rclone serve s3)."""

from __future__ import annotations

import socket

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contavsep import storage
from contavsep.storage import S3Settings, StorageError


@pytest.fixture(params=["file", "s3"])
def base_uri(request: pytest.FixtureRequest, tmp_path) -> tuple[str, S3Settings | None]:
    if request.param == "file":
        return f"file://{tmp_path}/store", None
    server = request.getfixturevalue("s3_server")
    return server.new_bucket("store") + "/prefix", server.settings


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("relative/path", "is not a storage URI"),
        ("/abs/path", "file:///abs/path"),
        ("file://relative/path", "three slashes"),
        ("gs://bucket/x", "unknown URI scheme 'gs://'"),
        ("s3://Bad_Bucket/x", "not a valid bucket name"),
        ("s3://bucket/a/../b", "'..'"),
        ("", "empty storage URI"),
    ],
)
def test_bad_uris_get_one_clear_line(uri: str, fragment: str) -> None:
    with pytest.raises(StorageError) as info:
        storage.parse_uri(uri)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_parse_and_join() -> None:
    assert storage.parse_uri("file:///tmp/x/../y/") == storage.StorageURI("file", "", "/tmp/y")
    assert storage.parse_uri("s3://my-bucket/a/b/") == storage.StorageURI("s3", "my-bucket", "a/b")
    assert str(storage.parse_uri("s3://my-bucket")) == "s3://my-bucket"
    assert storage.join("s3://my-bucket", "ds", "manifest.json") == "s3://my-bucket/ds/manifest.json"
    assert storage.join("file:///data/ds/", "split=train") == "file:///data/ds/split=train"


def test_roundtrip_list_delete(base_uri: tuple[str, S3Settings | None]) -> None:
    base, settings = base_uri
    a = storage.join(base, "ds", "a.bin")
    b = storage.join(base, "ds", "sub", "b.bin")
    sibling = storage.join(base, "ds2", "c.bin")
    assert not storage.exists(a, settings)
    with pytest.raises(FileNotFoundError, match="a.bin does not exist"):
        storage.read_bytes(a, settings)
    storage.write_bytes_atomic(a, b"first", settings)
    storage.write_bytes_atomic(a, b"second version", settings)  # replace in place
    storage.write_bytes_atomic(b, bytes(range(256)) * 1000, settings)
    storage.write_bytes_atomic(sibling, b"keep me", settings)
    assert storage.read_bytes(a, settings) == b"second version"
    assert storage.read_bytes(b, settings) == bytes(range(256)) * 1000
    assert storage.exists(a, settings) and storage.exists(storage.join(base, "ds"), settings)
    assert storage.list_dir(storage.join(base, "ds"), settings) == ["a.bin", "sub"]
    assert storage.list_dir(storage.join(base, "ds"), settings, recursive=True) == ["a.bin", "sub/b.bin"]
    assert storage.list_dir(storage.join(base, "nothing"), settings) == []
    assert storage.delete_prefix(storage.join(base, "ds"), settings) == 2
    assert not storage.exists(a, settings) and not storage.exists(b, settings)
    assert storage.read_bytes(sibling, settings) == b"keep me"  # "ds" does not delete "ds2"
    assert storage.delete_prefix(storage.join(base, "ds"), settings) == 0


def test_parquet_through_resolved_filesystem(base_uri: tuple[str, S3Settings | None]) -> None:
    base, settings = base_uri
    uri = storage.join(base, "t.parquet")
    table = pa.table({"x": pa.array([1, 2, 3], pa.int16()), "s": ["a", "b", "c"]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes_atomic(uri, sink.getvalue(), settings)
    with storage.open_input_file(uri, settings) as f:
        assert pq.read_table(f, columns=["s"]).column("s").to_pylist() == ["a", "b", "c"]
    fs, path = storage.resolve(uri, settings)
    assert pq.read_table(path, filesystem=fs).equals(table)


def test_local_atomic_write_leaves_no_temp_files(tmp_path) -> None:
    uri = f"file://{tmp_path}/deep/dir/f.json"
    storage.write_bytes_atomic(uri, b"{}")
    assert sorted(p.name for p in (tmp_path / "deep" / "dir").iterdir()) == ["f.json"]


def test_s3_refused_keys_name_the_setting(s3_server, s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "x.bin")
    storage.write_bytes_atomic(uri, b"data", s3_server.settings)
    bad = S3Settings(
        endpoint_url=s3_server.settings.endpoint_url,
        access_key=s3_server.settings.access_key,
        secret_key="wrong-secret",
        keys_from="CONTAVSEP_S3_ACCESS_KEY / CONTAVSEP_S3_SECRET_KEY",
    )
    for call in (
        lambda: storage.read_bytes(uri, bad),
        lambda: storage.exists(uri, bad),
        lambda: storage.write_bytes_atomic(uri, b"x", bad),
        lambda: storage.ensure_bucket(s3_bucket, bad),
        lambda: storage.list_dir(s3_bucket, bad),
        lambda: storage.delete_prefix(uri, bad),
    ):
        with pytest.raises(StorageError) as info:
            call()
        message = str(info.value)
        assert "refused the credentials" in message and "CONTAVSEP_S3_SECRET_KEY" in message
        assert "\n" not in message
    assert storage.read_bytes(uri, s3_server.settings) == b"data"  # nothing was overwritten


def test_s3_unreachable_endpoint_names_the_setting() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = S3Settings(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key="k" * 12,
        secret_key="s" * 16,
        endpoint_from="CONTAVSEP_S3_ENDPOINT",
    )
    with pytest.raises(StorageError, match="cannot reach S3 endpoint .* CONTAVSEP_S3_ENDPOINT"):
        storage.read_bytes("s3://bucket/x", settings)
    with pytest.raises(StorageError, match="cannot reach S3 endpoint"):
        storage.ensure_bucket("s3://bucket", settings)


def test_ensure_bucket_creates_once(s3_server) -> None:
    uri = "s3://fresh-bucket-for-ensure"
    assert not storage.exists(uri, s3_server.settings)
    storage.ensure_bucket(uri, s3_server.settings)
    storage.ensure_bucket(uri, s3_server.settings)  # idempotent
    assert storage.exists(uri, s3_server.settings)


def test_settings_from_env_precedence() -> None:
    env = {
        "AWS_ENDPOINT_URL": "http://aws-style:9000",
        "AWS_ACCESS_KEY_ID": "aws-key",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    aws = S3Settings.from_env(env)
    assert (aws.endpoint_url, aws.access_key, aws.secret_key, aws.region) == (
        "http://aws-style:9000",
        "aws-key",
        "aws-secret",
        "eu-west-1",
    )
    assert aws.keys_from == "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
    ours = S3Settings.from_env(
        {
            **env,
            "CONTAVSEP_S3_ENDPOINT": "http://ours:1",
            "CONTAVSEP_S3_ACCESS_KEY": "k",
            "CONTAVSEP_S3_SECRET_KEY": "s",
            "CONTAVSEP_S3_REGION": "r",
        }
    )
    assert (ours.endpoint_url, ours.access_key, ours.secret_key, ours.region) == ("http://ours:1", "k", "s", "r")
    assert ours.endpoint_from == "CONTAVSEP_S3_ENDPOINT"
    assert "secret" not in repr(ours) and "'s'" not in repr(ours)  # the secret is not in reprs/logs
    with pytest.raises(StorageError, match="CONTAVSEP_S3_ENDPOINT"):
        S3Settings.from_env({"CONTAVSEP_S3_ENDPOINT": "localhost:9000"})
    with pytest.raises(
        StorageError,
        match=r"CONTAVSEP_S3_ACCESS_KEY is set but CONTAVSEP_S3_SECRET_KEY \(or AWS_SECRET_ACCESS_KEY\) is not",
    ):
        S3Settings.from_env({"CONTAVSEP_S3_ACCESS_KEY": "only-the-key"})
    with pytest.raises(
        StorageError,
        match=r"CONTAVSEP_S3_SECRET_KEY is set but CONTAVSEP_S3_ACCESS_KEY \(or AWS_ACCESS_KEY_ID\) is not",
    ):
        S3Settings.from_env({"CONTAVSEP_S3_SECRET_KEY": "only-the-secret"})
