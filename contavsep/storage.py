"""Storage URIs: ``file:///abs/path`` or ``s3://bucket/prefix``, and the few calls built on them.

Everything that reads or writes datasets and checkpoints goes through this module, so the one
URI form, the S3 settings and the quirks of small S3-compatible servers live in one place:

- Arrow/Parquet bytes move through ``pyarrow.fs`` (``S3FileSystem`` / ``LocalFileSystem``);
  boto3 is used only where pyarrow has no call: a single-PUT upload, bucket creation, and
  bulk deletes (pyarrow's deletes re-create "directory marker" objects such as ``prefix/``,
  which small servers store as stray empty files or refuse).
- Recent AWS SDKs add streaming request checksums (``aws-chunked`` bodies) that small servers
  answer with ``411 MissingContentLength``. boto3 clients are configured through
  ``botocore.config.Config(request_checksum_calculation="when_required", ...)``; the AWS C++
  SDK inside pyarrow has no such option and reads the standard ``AWS_REQUEST_CHECKSUM_CALCULATION``
  / ``AWS_RESPONSE_CHECKSUM_VALIDATION`` variables when a filesystem is created, so those two are
  set (only if the user has not set them) right before the first ``S3FileSystem`` is built.
- Nothing here creates directories on S3 (no ``create_dir``, no markers): S3 has no directories,
  and writing Arrow datasets with ``create_dir=False`` is the rule for callers that use
  ``pyarrow.dataset.write_dataset`` directly.

Atomicity: :func:`write_bytes_atomic` writes a temp name and renames on ``file://`` and does one
PUT on S3 (atomic per object). Dataset-level atomicity (parts first, manifest last) is built on
top of it by the dataset writer.

S3 settings come from explicit :class:`S3Settings`, else ``CONTAVSEP_S3_ENDPOINT``,
``CONTAVSEP_S3_ACCESS_KEY``, ``CONTAVSEP_S3_SECRET_KEY``, ``CONTAVSEP_S3_REGION``, else the
standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` (without keys, the AWS default credential chain applies).
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from contavsep.errors import ContavsepError

# Local temp files of atomic writes start with this; listings never show them.
TEMP_PREFIX = ".contavsep-tmp-"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class StorageError(ContavsepError):
    """A storage URI, setting or server problem; the message is one line naming what to fix."""


@dataclass(frozen=True)
class S3Settings:
    """Where and how to reach an S3-compatible server.

    ``endpoint_url`` is ``None`` for AWS itself; ``access_key``/``secret_key`` ``None`` means the
    AWS default credential chain (instance profile, ``~/.aws``...). The ``*_from`` fields name
    the setting a value came from, so error messages can say what to change.
    """

    endpoint_url: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    endpoint_from: str = "S3Settings(endpoint_url=...)"
    keys_from: str = "S3Settings(access_key=..., secret_key=...)"

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            parsed = urlparse(self.endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise StorageError(
                    f"S3 endpoint '{self.endpoint_url}' (from {self.endpoint_from}) must look like "
                    f"http://host:port or https://host"
                )
        if (self.access_key is None) != (self.secret_key is None):
            raise StorageError(f"S3 access key and secret key must be given together (check {self.keys_from})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Settings from ``CONTAVSEP_S3_*``, falling back to the standard ``AWS_*`` variables.

        Without key variables, ``CONTAVSEP_S3_KEYS_FILE`` may name a JSON file
        ``{"access_key": ..., "secret_key": ...}`` (0600) holding them: processes are told where
        the keys are, not the keys (environment variables travel in Ray's runtime env, job records
        and logs). A file that does not exist on this machine leaves the AWS default chain.
        """
        env = os.environ if environ is None else environ

        def pick(*names: str) -> tuple[str | None, str | None]:
            for name in names:
                value = env.get(name)
                if value:
                    return value, name
            return None, None

        endpoint, endpoint_var = pick("CONTAVSEP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        access, access_var = pick("CONTAVSEP_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        secret, secret_var = pick("CONTAVSEP_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
        region, _ = pick("CONTAVSEP_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
        if (access is None) != (secret is None):  # name the missing one, not "None"
            given, missing = (
                (access_var, "CONTAVSEP_S3_SECRET_KEY (or AWS_SECRET_ACCESS_KEY)")
                if access
                else (secret_var, "CONTAVSEP_S3_ACCESS_KEY (or AWS_ACCESS_KEY_ID)")
            )
            raise StorageError(
                f"{given} is set but {missing} is not: set both S3 keys, or neither for the AWS default credentials"
            )
        keys_from = (
            f"{access_var} / {secret_var}"
            if access_var or secret_var
            else "CONTAVSEP_S3_ACCESS_KEY / CONTAVSEP_S3_SECRET_KEY (unset: AWS default credentials)"
        )
        keys_file = env.get(KEYS_FILE_ENV)
        if not (access_var or secret_var) and keys_file:
            if os.path.isfile(keys_file):
                access, secret = _read_keys_file(keys_file)
                keys_from = f"the S3 keys file {keys_file} ({KEYS_FILE_ENV})"
            else:
                keys_from = f"{KEYS_FILE_ENV} ({keys_file}: not on this machine, so AWS default credentials)"
        return cls(
            endpoint_url=endpoint,
            access_key=access,
            secret_key=secret,
            region=region or "us-east-1",
            endpoint_from=endpoint_var or "CONTAVSEP_S3_ENDPOINT (unset: AWS)",
            keys_from=keys_from,
        )

    @property
    def endpoint_label(self) -> str:
        return self.endpoint_url or "AWS S3"


KEYS_FILE_ENV = "CONTAVSEP_S3_KEYS_FILE"  # path of a 0600 JSON keys file (see S3Settings.from_env)


def _read_keys_file(path: str) -> tuple[str, str]:
    try:
        with open(path) as f:
            doc = json.load(f)
        return str(doc["access_key"]), str(doc["secret_key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"the S3 keys file {path} ({KEYS_FILE_ENV}) is unreadable: {exc}") from None


@dataclass(frozen=True)
class StorageURI:
    """A parsed storage URI. ``path`` is the absolute local path (file) or the key (s3, no slashes
    at either end, ``""`` for the bucket root)."""

    scheme: str  # "file" | "s3"
    bucket: str  # "" for file
    path: str

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"


def parse_uri(uri: str) -> StorageURI:
    """Parse and check a storage URI; raise :class:`StorageError` naming the problem."""
    if not isinstance(uri, str) or not uri:
        raise StorageError("empty storage URI: use file:///absolute/path or s3://bucket/prefix")
    if "://" not in uri:
        hint = f"file://{os.path.abspath(uri)}" if not uri.startswith("/") else f"file://{uri}"
        raise StorageError(
            f"'{uri}' is not a storage URI: use file:///absolute/path or s3://bucket/prefix (e.g. {hint})"
        )
    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        if not rest.startswith("/"):
            raise StorageError(
                f"'{uri}' is not an absolute file URI: use three slashes, file:///absolute/path "
                f"(relative paths and hosts are not supported)"
            )
        path = os.path.normpath(rest)
        if path.startswith("//"):  # normpath keeps a POSIX double leading slash
            path = "/" + path.lstrip("/")
        return StorageURI("file", "", path)
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise StorageError(
                f"'{uri}': '{bucket}' is not a valid bucket name (3-63 lowercase letters, digits, '.', '-')"
            )
        key = key.strip("/")
        segments = key.split("/") if key else []
        if any(s in ("", ".", "..") for s in segments):
            raise StorageError(f"'{uri}': S3 keys may not contain empty, '.' or '..' segments")
        return StorageURI("s3", bucket, key)
    raise StorageError(f"'{uri}': unknown URI scheme '{scheme}://'; use file:///absolute/path or s3://bucket/prefix")


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended as path segments (``join("s3://b/ds", "manifest.json")``)."""
    base = str(parse_uri(uri))
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    if not tail:
        return base
    return f"{base}/{tail}" if not base.endswith("/") else f"{base}{tail}"


# ----------------------------------------------------------------------------------------------
# filesystems and clients (cached per settings; built on first use, never at import)


def s3_filesystem(settings: S3Settings, retry_attempts: int | None = None) -> pafs.S3FileSystem:
    """The pyarrow S3 filesystem of ``settings`` (cached); ``retry_attempts`` sets the AWS SDK's
    default retry strategy (exponential backoff from 25 ms) instead of its standard 3 attempts."""
    return _s3_filesystem(settings, retry_attempts)


@functools.lru_cache(maxsize=8)
def _s3_filesystem(settings: S3Settings, retry_attempts: int | None = None) -> pafs.S3FileSystem:
    # The AWS C++ SDK reads these when a client is created; see the module docstring.
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    kwargs: dict[str, Any] = {
        "region": settings.region,
        "connect_timeout": 5.0,
        "allow_bucket_creation": False,
        "allow_bucket_deletion": False,
    }
    if retry_attempts is not None:
        kwargs["retry_strategy"] = pafs.AwsDefaultS3RetryStrategy(max_attempts=retry_attempts)
    if settings.access_key is not None:
        kwargs.update(access_key=settings.access_key, secret_key=settings.secret_key)
    if settings.endpoint_url is not None:
        parsed = urlparse(settings.endpoint_url)
        kwargs.update(endpoint_override=parsed.netloc + parsed.path.rstrip("/"), scheme=parsed.scheme)
    return pafs.S3FileSystem(**kwargs)


def s3_client(settings: S3Settings) -> Any:
    """The boto3 S3 client of ``settings`` (cached; for calls pyarrow's filesystem has no
    equivalent of, or must not make from its own IO threads)."""
    return _s3_client(settings)


@functools.lru_cache(maxsize=8)
def _s3_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    config = BotoConfig(
        # Small S3 servers reject the streaming checksums recent SDKs send by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        connect_timeout=5,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region,
        config=config,
    )


def _settings(settings: S3Settings | None) -> S3Settings:
    return settings if settings is not None else S3Settings.from_env()


def resolve(uri: str, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path of ``uri`` (``bucket/key`` on S3)."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path
    fs = _s3_filesystem(_settings(settings))
    return fs, f"{parsed.bucket}/{parsed.path}" if parsed.path else parsed.bucket


# ----------------------------------------------------------------------------------------------
# error translation: one clear line naming the setting to change

_REFUSED = (
    "ACCESS_DENIED",
    "SIGNATURE_DOES_NOT_MATCH",
    "INVALID_ACCESS_KEY_ID",
    "AccessDenied",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "Forbidden",
    "403",
)


def _refused(settings: S3Settings, detail: str) -> StorageError:
    return StorageError(
        f"S3 endpoint {settings.endpoint_label} refused the credentials ({detail}): check {settings.keys_from}"
        f" (and that these keys may access the bucket)"
    )


def _unreachable(settings: S3Settings, detail: str) -> StorageError:
    return StorageError(
        f"cannot reach S3 endpoint {settings.endpoint_label} (set by {settings.endpoint_from}): {detail};"
        f" is the server running?"
    )


def _translate_s3_error(exc: BaseException, uri: str, settings: S3Settings) -> BaseException:
    """Map pyarrow/botocore errors to a one-line :class:`StorageError` (or the original)."""
    if isinstance(exc, (StorageError, FileNotFoundError)):
        return exc
    text = str(exc)
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    name = type(exc).__name__
    if (
        name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError")
        or "NETWORK_CONNECTION" in text
    ):
        detail = text.split("Details:")[-1].strip() if "Details:" in text else text
        return _unreachable(settings, detail.splitlines()[0] if detail else name)
    if name == "NoCredentialsError":
        return StorageError(f"no S3 credentials for {uri}: set {settings.keys_from}")
    if code in ("NoSuchBucket",) or "NO_SUCH_BUCKET" in text:
        bucket = parse_uri(uri).bucket
        return StorageError(
            f"S3 bucket '{bucket}' does not exist at {settings.endpoint_label} (for {uri}); create it first"
        )
    if code in _REFUSED or any(marker in text for marker in _REFUSED[:3]):
        return _refused(settings, code or next(m for m in _REFUSED[:3] if m in text))
    return exc


@contextmanager
def _errors(uri: str, settings: S3Settings | None) -> Iterator[None]:
    if parse_uri(uri).scheme != "s3":
        yield
        return
    try:
        yield
    except Exception as exc:  # translated or re-raised unchanged
        translated = _translate_s3_error(exc, uri, _settings(settings))
        if translated is exc:
            raise
        raise translated from exc


def storage_errors(uri: str, settings: S3Settings | None = None) -> Any:
    """Context manager turning S3 credential/endpoint errors raised inside it into one-line
    :class:`StorageError` s (for callers that use the filesystem from :func:`resolve` directly)."""
    return _errors(uri, settings)


# ----------------------------------------------------------------------------------------------
# the helpers


def exists(uri: str, settings: S3Settings | None = None) -> bool:
    """Whether a file or a non-empty directory/prefix exists at ``uri``."""
    fs, path = resolve(uri, settings)
    with _errors(uri, settings):
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.NotFound:
            return True
        if isinstance(fs, pafs.S3FileSystem) and "/" not in path:
            return _bucket_exists(uri, settings)
    return False


def read_bytes(uri: str, settings: S3Settings | None = None) -> bytes:
    """The whole content of the file at ``uri``; :class:`FileNotFoundError` naming it if absent."""
    fs, path = resolve(uri, settings)
    with _errors(uri, settings):
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(
                f"{uri} does not exist" + (" (it is a directory)" if info.type == pafs.FileType.Directory else "")
            )
        with fs.open_input_file(path) as f:
            return f.read()


def open_input_file(uri: str, settings: S3Settings | None = None) -> pa.NativeFile:
    """A random-access pyarrow file (e.g. for reading a few Parquet columns without the rest)."""
    fs, path = resolve(uri, settings)
    with _errors(uri, settings):
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise FileNotFoundError(f"{uri} does not exist")
        return fs.open_input_file(path)


def write_bytes_atomic(
    uri: str, data: bytes | bytearray | memoryview | pa.Buffer, settings: S3Settings | None = None
) -> None:
    """Write ``data`` so that readers see either the old content or all of the new one.

    file://: a temp file in the same directory, fsync, then ``os.replace``; parent directories
    are created. s3://: one PUT (atomic per object on S3 and on ``rclone serve s3``).
    """
    parsed = parse_uri(uri)
    payload = data.to_pybytes() if isinstance(data, pa.Buffer) else bytes(data) if isinstance(data, bytearray) else data
    if parsed.scheme == "file":
        target = Path(parsed.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f"{TEMP_PREFIX}{target.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    if not parsed.path:
        raise StorageError(f"'{uri}' names a bucket, not an object: add a key, e.g. {uri.rstrip('/')}/file")
    settings = _settings(settings)
    with _errors(uri, settings):
        _s3_client(settings).put_object(Bucket=parsed.bucket, Key=parsed.path, Body=payload)


def list_dir(uri: str, settings: S3Settings | None = None, *, recursive: bool = False) -> list[str]:
    """Sorted names under ``uri``: direct children (files and directories), or with
    ``recursive=True`` the relative paths of all files below. Missing ``uri`` gives ``[]``;
    temp files of unfinished atomic writes are not listed."""
    fs, path = resolve(uri, settings)
    with _errors(uri, settings):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    prefix = path.rstrip("/") + "/"
    names: set[str] = set()
    for info in infos:
        if recursive and info.type != pafs.FileType.File:
            continue
        rel = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
        if not rel or rel.rsplit("/", 1)[-1].startswith(TEMP_PREFIX):
            continue
        names.add(rel)  # a set: some servers list a stray marker file and a directory of one name
    return sorted(names)


def delete_prefix(uri: str, settings: S3Settings | None = None) -> int:
    """Delete the file or the whole tree at ``uri``; return how many files were removed.

    On S3 the object ``key`` and every object under ``key/`` go (not ``key2/...``); on file://
    the file or directory. A missing ``uri`` is not an error (returns 0).
    """
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        target = Path(parsed.path)
        if target.is_dir() and not target.is_symlink():
            count = sum(1 for p in target.rglob("*") if not p.is_dir())
            shutil.rmtree(target)
            return count
        if target.exists() or target.is_symlink():
            target.unlink()
            return 1
        return 0
    settings = _settings(settings)
    client = _s3_client(settings)
    deleted = 0
    with _errors(uri, settings):
        keys: list[str] = []
        prefix = f"{parsed.path}/" if parsed.path else ""
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=parsed.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        if parsed.path:
            try:
                client.head_object(Bucket=parsed.bucket, Key=parsed.path)
                keys.append(parsed.path)
            except Exception as exc:  # absent object: a 404 is the normal case
                if str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) not in (
                    "404",
                    "NoSuchKey",
                    "NotFound",
                ):
                    raise
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            reply = client.delete_objects(
                Bucket=parsed.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = reply.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(
                    f"could not delete s3://{parsed.bucket}/{first.get('Key')}: {first.get('Code')} {first.get('Message', '')}".strip()
                )
            deleted += len(batch)
    return deleted


def _bucket_exists(uri: str, settings: S3Settings | None) -> bool:
    parsed = parse_uri(uri)
    settings = _settings(settings)
    try:
        _s3_client(settings).head_bucket(Bucket=parsed.bucket)
        return True
    except Exception as exc:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise


def ensure_bucket(uri: str, settings: S3Settings | None = None) -> None:
    """Make sure the bucket of an ``s3://`` URI exists (create it if not); on ``file://`` create the
    directory. Doubles as the credential check: refused keys raise a :class:`StorageError`."""
    parsed = parse_uri(uri)
    if parsed.scheme == "file":
        Path(parsed.path).mkdir(parents=True, exist_ok=True)
        return
    settings = _settings(settings)
    with _errors(uri, settings):
        if _bucket_exists(uri, settings):
            return
        client = _s3_client(settings)
        try:
            client.create_bucket(Bucket=parsed.bucket)
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):  # a concurrent creator won
                raise
