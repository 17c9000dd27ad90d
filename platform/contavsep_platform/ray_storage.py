"""The storage filesystem Ray Tune and Ray Train write a sweep through (experiment state, step
checkpoints): :func:`ray_storage` and its S3 handler :class:`S3Storage`.

Three things the plain pyarrow ``S3FileSystem`` does not do:

- **no directory markers**: Tune and Train call ``create_dir`` before writing under a prefix,
  which pyarrow turns into an empty ``prefix/`` object; small S3 servers such as ``rclone serve
  s3`` refuse those (InternalError). S3 has no directories, so ``create_dir`` is a no-op.
- **no keys in pickles**: Tune pickles its storage filesystem into the sweep's state
  (``tuner.pkl``, ``experiment_state``, the searcher's state), which lands in the bucket and in
  Ray's session folder, and Ray ships it to every trial. A pickled ``S3FileSystem`` carries its
  keys; this handler pickles only the endpoint and region and, in the process that unpickles
  it, resolves the keys the way every command does (:func:`resolve_settings`: the keys file
  named by ``CONTAVSEP_S3_KEYS_FILE`` or the local services' state, else the node's credential
  chain: instance role, workload identity, K8s Secret in the pod's env).
- **retries through short outages**: a transient error (connection refused/reset, timeout, HTTP
  5xx, SlowDown) of a listing, open, copy, move or delete is retried with exponential backoff for
  up to :data:`OUTAGE_S` seconds, with one log line per outage (not per retry). Uploads (Train's
  step checkpoints, Tune's state) are pyarrow's own S3 streams whose requests the AWS SDK retries
  with exponential backoff for up to ~3.4 min (:data:`UPLOAD_ATTEMPTS`), silently: they run on
  pyarrow's IO threads inside ``copy_files``, which drops errors raised by a Python stream's
  ``close()`` and deadlocks when such a ``close()`` opens another pyarrow S3 stream, so a
  buffering Python stream with its own retries would lose a failed upload or hang the sweep
  (both seen here). An outage longer than that fails the trial, which ``--resume`` continues
  from its last checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow.fs as pafs

from contavsep import storage

log = logging.getLogger("contavsep.storage")

T = TypeVar("T")

OUTAGE_S = 180.0  # how long one call keeps retrying a storage outage before it fails
FIRST_RETRY_S = 0.5  # first backoff; doubled per retry up to MAX_RETRY_S
MAX_RETRY_S = 15.0
# Attempts of the AWS SDK's default retry strategy for uploads: 25 ms x (2^0 + ... + 2^12) = 205 s.
UPLOAD_ATTEMPTS = 13

# Markers of transient failures in pyarrow's (AWS C++ SDK) and botocore's error texts.
_TRANSIENT = (
    "NETWORK_CONNECTION",
    "Couldn't connect",
    "Connection refused",
    "Connection reset",
    "connection reset",
    "Timeout was reached",
    "timed out",
    "REQUEST_TIMEOUT",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "SlowDown",
    "INTERNAL_FAILURE",
    "InternalError",
    "HTTP response code: 500",
    "HTTP response code: 502",
    "HTTP response code: 503",
    "HTTP response code: 504",
    "curlCode: 7",
    "curlCode: 28",
    "curlCode: 52",
    "curlCode: 55",
    "curlCode: 56",
    "Broken pipe",
    "Empty reply from server",
)


_TRANSIENT_BOTO = (
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ConnectionError",
    "ProxyConnectionError",
)


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error looks like an outage (worth retrying), not a refusal or a bad path."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if type(exc).__name__ in _TRANSIENT_BOTO:
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        return status >= 500 or str((response.get("Error") or {}).get("Code")) in ("SlowDown", "ServiceUnavailable")
    text = str(exc)
    return isinstance(exc, OSError) and any(marker in text for marker in _TRANSIENT)


def resolve_settings(endpoint_url: str | None, region: str) -> storage.S3Settings:
    """This process's S3 settings for ``endpoint_url``: those :func:`resolve_endpoints` finds
    (explicit env, keys file, local services) when they name the same endpoint, else the
    endpoint with this process's own credentials (env variables, keys file, AWS default chain)."""
    from dataclasses import replace

    from contavsep_platform.settings import resolve_endpoints

    mine = resolve_endpoints().s3
    if mine is not None and mine.endpoint_url == endpoint_url:
        return mine
    return replace(
        storage.S3Settings.from_env(),
        endpoint_url=endpoint_url,
        region=region,
        endpoint_from="the sweep's storage filesystem (pickled by Ray Tune)",
    )


def _rebuild(endpoint_url: str | None, region: str, outage_s: float) -> S3Storage:
    return S3Storage(resolve_settings(endpoint_url, region), outage_s)


class S3Storage(pafs.FileSystemHandler):
    """A pyarrow filesystem handler over the S3 of ``settings``: no directory markers, pickled
    without keys, retrying through outages (see the module docstring). Wrap it in
    ``pyarrow.fs.PyFileSystem``; :func:`ray_storage` does."""

    def __init__(self, settings: storage.S3Settings, outage_s: float = OUTAGE_S):
        self.settings = settings  # this process's, keys included; never pickled (see __reduce__)
        self.outage_s = outage_s
        self._fs: pafs.S3FileSystem | None = None
        self._upload_fs: pafs.S3FileSystem | None = None
        self._lock = threading.Lock()
        self._outage_logged = False  # one log line per outage, shared by the threads of a copy

    def __reduce__(self) -> tuple[Callable[..., S3Storage], tuple[Any, ...]]:
        # Endpoint and region only: the unpickling process finds its own keys.
        return _rebuild, (self.settings.endpoint_url, self.settings.region, self.outage_s)

    @property
    def fs(self) -> pafs.S3FileSystem:
        if self._fs is None:
            self._fs, _ = storage.resolve("s3://bucket", self.settings)
        return self._fs

    @property
    def upload_fs(self) -> pafs.S3FileSystem:
        """The same S3 with the AWS SDK retrying each request (part uploads, the final PUT) for
        up to ~3.4 min: 25 ms x 2^k backoff over UPLOAD_ATTEMPTS attempts."""
        if self._upload_fs is None:
            self._upload_fs = storage.s3_filesystem(self.settings, retry_attempts=UPLOAD_ATTEMPTS)
        return self._upload_fs

    def retry(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, retried through transient errors for up to ``outage_s`` seconds."""
        deadline = time.monotonic() + self.outage_s
        delay = FIRST_RETRY_S
        while True:
            try:
                result = call()
            except Exception as exc:  # only outages are retried; anything else is raised as is
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                with self._lock:
                    first = not self._outage_logged
                    self._outage_logged = True
                if first:
                    detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
                    log.warning(
                        "storage %s unavailable (%s: %s); retrying for up to %.0f s",
                        self.settings.endpoint_label,
                        what,
                        detail,
                        self.outage_s,
                    )
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            if self._outage_logged:
                with self._lock:
                    self._outage_logged = False
            return result

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Storage) and (self.settings.endpoint_url, self.settings.region) == (
            other.settings.endpoint_url,
            other.settings.region,
        )

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return "contavsep-s3"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[Any]:
        return self.retry("get_file_info", lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector: Any) -> list[Any]:
        return self.retry("list", lambda: self.fs.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        return None  # S3 has no directories; see the module docstring

    def delete_dir(self, path: str) -> None:
        self.retry("delete_dir", lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.retry("delete_dir_contents", lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the whole S3 account")

    def delete_file(self, path: str) -> None:
        self.retry("delete_file", lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self.retry("move", lambda: self.fs.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self.retry("copy", lambda: self.fs.copy_file(src, dest))

    def open_input_stream(self, path: str) -> Any:
        return self.retry("open", lambda: self.fs.open_input_stream(path))

    def open_input_file(self, path: str) -> Any:
        return self.retry("open", lambda: self.fs.open_input_file(path))

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        # pyarrow's own stream (see the module docstring): its requests retry in the AWS SDK.
        return self.retry("open", lambda: self.upload_fs.open_output_stream(path, metadata=metadata))

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        raise OSError("S3 objects cannot be appended to")


def ray_storage(uri: str, settings: storage.S3Settings | None = None) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray Tune/Train RunConfigs.

    On S3 a ``bucket/key`` path and a ``PyFileSystem`` over :class:`S3Storage` with ``settings``
    (default: this process's, see :func:`resolve_settings`); on file:// the absolute path and
    ``None`` (Ray's local filesystem).
    """
    parsed = storage.parse_uri(uri)
    if parsed.scheme == "file":
        return parsed.path, None
    if settings is None:
        from contavsep_platform.settings import resolve_endpoints

        settings = resolve_endpoints().s3 or storage.S3Settings.from_env()
    _, path = storage.resolve(uri, settings)
    return path, pafs.PyFileSystem(S3Storage(settings))
