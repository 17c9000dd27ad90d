"""Health checks: whether a started service answers, per service, and waiting for the first answer.

Each ``*_check`` builds, for one record, a cheap callable answering whether that service answers
its health request now (S3: a bucket listing; MLflow: ``/health``; Ray: the dashboard, the head
node alive and the job API); :func:`wait_healthy` polls one until it passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contavsep_platform.services.errors import ServiceError
from contavsep_platform.services.logs import log_tail
from contavsep_platform.services.procs import is_alive
from contavsep_platform.settings import ServiceRecord, local_s3_settings, private_ray_temp_dir, read_state

if TYPE_CHECKING:  # pyarrow-backed; imported where used so the CLI parser stays cheap to build
    from contavsep.storage import S3Settings


def _http_status(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 3.0) -> int | None:
    """HTTP status of a GET, ``None`` if nothing answers. Proxies are bypassed: these are local."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout_s) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _http_json(url: str, headers: Mapping[str, str] | None = None, timeout_s: float = 5.0) -> Any:
    """Decoded JSON of a GET, ``None`` if nothing (valid) answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=dict(headers or {})), timeout=timeout_s) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def ray_auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``Authorization`` header for a Ray dashboard with token auth (Ray 2.60 enables it when
    a token exists): the token of ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``, as Ray's own clients look it up; ``{}`` when there is none."""
    env = os.environ if environ is None else environ
    token = env.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        if env.get("RAY_AUTH_TOKEN_PATH"):
            path = Path(env["RAY_AUTH_TOKEN_PATH"])
        else:
            path = Path.home() / ".ray" / "auth_token"
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _s3_client(settings: S3Settings) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region,
        config=BotoConfig(
            connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}, s3={"addressing_style": "path"}
        ),
    )


def s3_check(record: ServiceRecord, state_dir: Path) -> Callable[[], bool]:
    """The S3 server answers a bucket listing with the local keys."""
    client = _s3_client(local_s3_settings(state_dir, record.url))

    def s3_ok() -> bool:
        try:
            client.list_buckets()
            return True
        except Exception:  # any failure (refused, timeout, 5xx) means not healthy yet
            return False

    return s3_ok


def mlflow_check(record: ServiceRecord, state_dir: Path) -> Callable[[], bool]:
    """The MLflow server answers ``/health`` with 200."""
    return lambda: _http_status(f"{record.url}/health") == 200


def ray_check(record: ServiceRecord, state_dir: Path) -> Callable[[], bool]:
    """The Ray dashboard answers, the head node is alive and the job API answers; a dashboard that
    refuses this client's token raises :class:`ServiceError` (waiting would not help)."""
    headers = ray_auth_headers()

    def ray_ok() -> bool:
        code = _http_status(f"{record.url}/api/version", headers)
        if code in (401, 403):
            raise ServiceError(
                f"the Ray dashboard {record.url} refuses this client's token (HTTP {code}): "
                f"set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token (see `ray get-auth-token`)"
            )
        if code != 200:
            return False
        # The dashboard answers before the head's raylet has registered (and `ray start` gives up
        # if that takes over 30 s), and the job API is a separate module: wait for both.
        nodes = _http_json(f"{record.url}/api/v0/nodes", headers)
        rows = (((nodes or {}).get("data") or {}).get("result") or {}).get("result") or []
        alive = any(row.get("state") == "ALIVE" for row in rows)
        return alive and _http_status(f"{record.url}/api/jobs/", headers) == 200

    return ray_ok


def ray_started(record: ServiceRecord, state_dir: Path) -> Callable[[], bool]:
    """``ray start`` is done: its last act is writing the head's address into the head's temp dir
    (``ray_current_cluster``), after the dashboard, raylet and job API already answer."""
    from ray._common.utils import get_ray_address_file

    options = read_state(state_dir).options
    address_file = Path(get_ray_address_file(options.get("ray_temp_dir") or private_ray_temp_dir(state_dir)))

    def written() -> bool:
        try:
            return address_file.read_text().strip() == record.address
        except OSError:
            return False

    return written


def healthy(check: Callable[[], bool]) -> bool:
    """Whether a service's check (one of the ``*_check`` callables) passes now; a refusal counts as no."""
    try:
        return check()
    except ServiceError:
        return False


def wait_healthy(
    record: ServiceRecord, check: Callable[[], bool], timeout_s: float, process: subprocess.Popen | None
) -> float:
    """Seconds until the service answered; :class:`ServiceError` if it exits or times out."""
    while True:
        exited = process.poll() if process is not None else (None if is_alive(record) else "?")
        if exited is not None:
            raise ServiceError(
                f"{record.name} exited during startup (status {exited}); last log line: "
                f"{log_tail(record.log)}; full log: {record.log}"
            )
        if check():
            return time.time() - record.started_at
        if time.time() - record.started_at > timeout_s:
            raise ServiceError(
                f"{record.name} did not answer within {timeout_s:.0f} s; last log line: "
                f"{log_tail(record.log)}; full log: {record.log}"
            )
        time.sleep(0.25)
