"""Where the platform's services are: S3 storage, the MLflow tracking server, the Ray cluster.

Every command finds its endpoints through :func:`resolve_endpoints`, in this order, per service:

1. explicit environment settings win: ``CONTAVSEP_S3_*`` / ``AWS_*`` (S3 endpoint and keys, or
   ``CONTAVSEP_S3_KEYS_FILE``, the path of a 0600 keys file; see
   :class:`contavsep.storage.S3Settings`), ``CONTAVSEP_STORAGE`` (storage root URI),
   ``MLFLOW_TRACKING_URI``, ``RAY_ADDRESS``;
2. else the services that ``contavsep services up`` recorded in the state file
   ``<state_dir>/services.json`` (``state_dir`` is ``$CONTAVSEP_HOME``, default ``~/.contavsep``);
3. else nothing remote: storage under ``file://<state_dir>/storage``, no MLflow, and Ray started
   in-process by whoever needs it.

A recorded service is used whether or not its process is alive right now: falling back silently
to local files while the user's datasets sit on the (stopped) S3 server would put a sweep's
checkpoints somewhere unexpected; instead the first S3 call fails with a line naming the endpoint
and its source (the state file), and ``contavsep services status`` tells what is running.
``contavsep services down`` removes the records, after which commands fall back to step 3.

The state file format is defined here (reading) and written by :mod:`contavsep_platform.services`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contavsep_platform.errors import UserError

if TYPE_CHECKING:  # contavsep.storage pulls in pyarrow: imported where used, keeping `contavsep --help` fast
    from contavsep.storage import S3Settings

STATE_FILE = "services.json"  # records of the running local services (0600)
KEYS_FILE = "s3-keys.json"  # the local S3 server's random keys (0600), kept across restarts
# Explicit S3 keys of the environment (CONTAVSEP_S3_* / AWS_*), copied here (0600) for the Ray
# processes of this machine, which are told this file's path (KEYS_FILE_ENV), never the keys.
CLIENT_KEYS_FILE = "s3-client-keys.json"
KEYS_FILE_ENV = "CONTAVSEP_S3_KEYS_FILE"  # = contavsep.storage.KEYS_FILE_ENV (not imported: pyarrow)
STATE_VERSION = 1

DATA_BUCKET = "contavsep"  # datasets/ and sweeps/ of the local services
MLFLOW_BUCKET = "mlflow-artifacts"  # where the local MLflow server proxies artifacts to

# Any of these set means the user configured S3 explicitly (step 1 above).
_S3_ENV = (
    "CONTAVSEP_S3_ENDPOINT",
    "CONTAVSEP_S3_ACCESS_KEY",
    "CONTAVSEP_S3_SECRET_KEY",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    KEYS_FILE_ENV,
)


class SettingsError(UserError):
    """A setting or the services state file is unusable; the message says what to change
    (every CLI command reports it as one line, exit 2)."""


@dataclass(frozen=True)
class ServiceRecord:
    """One process tree started by ``contavsep services up``, as recorded in the state file.

    ``pid`` is the session leader (started with a new session, so every process it spawns shares
    ``sid == pid``); ``cmdline`` is its exact argv, compared with ``/proc/<pid>/cmdline`` before
    any signal is sent, so a reused pid is never killed.
    """

    name: str  # "s3" | "mlflow" | "ray"
    pid: int
    cmdline: tuple[str, ...]
    url: str  # S3 endpoint / MLflow tracking URI / Ray dashboard URL
    ports: Mapping[str, int]  # every port it listens on, by role ("s3", "mlflow", "ray", "dashboard", ...)
    log: str  # its stdout+stderr
    started_at: float  # time.time() at launch
    startup_s: float | None = None  # launch -> first healthy answer; None while not yet healthy
    address: str | None = None  # Ray GCS address (host:port) for ray.init / RAY_ADDRESS
    depends: Mapping[str, str] = field(default_factory=dict)  # URLs of services baked into its env

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "cmdline": list(self.cmdline),
            "url": self.url,
            "ports": dict(self.ports),
            "log": self.log,
            "started_at": self.started_at,
            "startup_s": self.startup_s,
            "address": self.address,
            "depends": dict(self.depends),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ServiceRecord:
        return cls(
            name=str(doc["name"]),
            pid=int(doc["pid"]),
            cmdline=tuple(str(a) for a in doc["cmdline"]),
            url=str(doc["url"]),
            ports={str(k): int(v) for k, v in doc["ports"].items()},
            log=str(doc["log"]),
            started_at=float(doc["started_at"]),
            startup_s=None if doc.get("startup_s") is None else float(doc["startup_s"]),
            address=doc.get("address"),
            depends={str(k): str(v) for k, v in (doc.get("depends") or {}).items()},
        )


@dataclass(frozen=True)
class ServicesState:
    """The state file: the ports and options last used (so ``up`` after ``down`` comes back the
    same way) and the records of the services started and not yet stopped."""

    ports: Mapping[str, int] = field(default_factory=dict)
    services: Mapping[str, ServiceRecord] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)  # e.g. the Ray head's num_cpus, temp_dir

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "ports": dict(self.ports),
            "options": dict(self.options),
            "services": {name: rec.to_json() for name, rec in self.services.items()},
        }


@dataclass(frozen=True)
class Endpoints:
    """Resolved endpoints of one machine's view of the platform.

    ``s3`` is ``None`` when no S3 is configured (``file://`` storage only); ``storage_uri`` is the
    root under which ``datasets/`` and ``sweeps/`` live; ``ray_address`` ``None`` means start (or
    attach to) a local Ray in-process; ``ray_dashboard_url`` is where ``ray job submit`` goes
    when the local services run a Ray head (``None`` otherwise).
    """

    s3: S3Settings | None
    storage_uri: str
    mlflow_tracking_uri: str | None
    ray_address: str | None
    state_dir: Path
    ray_dashboard_url: str | None = None


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$CONTAVSEP_HOME``, else ``~/.contavsep`` (absolute)."""
    env = os.environ if environ is None else environ
    home = env.get("CONTAVSEP_HOME")
    return Path(home).expanduser().absolute() if home else Path.home() / ".contavsep"


def read_state(state_dir: Path) -> ServicesState:
    """The state file's content; an empty state when there is none."""
    path = state_dir / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ServicesState()
    try:
        doc = json.loads(text)
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {STATE_VERSION}")
        return ServicesState(
            ports={str(k): int(v) for k, v in doc.get("ports", {}).items()},
            services={name: ServiceRecord.from_json(rec) for name, rec in doc.get("services", {}).items()},
            options={str(k): str(v) for k, v in doc.get("options", {}).items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SettingsError(
            f"services state file {path} is unreadable ({exc}); stop any services it started and remove it"
        ) from exc


def read_s3_keys(state_dir: Path) -> tuple[str, str]:
    """The local S3 server's (access key, secret key) from its 0600 keys file."""
    path = state_dir / KEYS_FILE
    if not path.exists():
        raise SettingsError(f"the local S3 keys file {path} is missing: run `contavsep services up` again")
    return read_keys_file(path)


def read_keys_file(path: Path) -> tuple[str, str]:
    """(access key, secret key) from a 0600 keys file (``{"access_key": ..., "secret_key": ...}``)."""
    try:
        doc = json.loads(path.read_text())
        return str(doc["access_key"]), str(doc["secret_key"])
    except FileNotFoundError as exc:
        raise SettingsError(f"the S3 keys file {path} is missing") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"the S3 keys file {path} is unreadable ({exc}); remove it, or restore it") from exc


def local_s3_settings(state_dir: Path, endpoint_url: str) -> S3Settings:
    """Settings for the local S3 server at ``endpoint_url`` with the keys of ``state_dir``."""
    from contavsep.storage import S3Settings

    access, secret = read_s3_keys(state_dir)
    return S3Settings(
        endpoint_url=endpoint_url,
        access_key=access,
        secret_key=secret,
        region="us-east-1",
        endpoint_from=f"the local services state {state_dir / STATE_FILE} (`contavsep services status`)",
        keys_from=f"the local S3 keys file {state_dir / KEYS_FILE}",
    )


def write_private(path: Path, text: str) -> None:
    """Atomic write of a 0600 file (temp + rename; the temp file is 0600 from its creation)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Ray's sockets live at <temp_dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store: 65
# characters past the temp dir, within the 107-byte AF_UNIX limit.
_RAY_TEMP_DIR_MAX = 40


def private_ray_temp_dir(state_dir: Path) -> str:
    """Temp dir of the Ray instances this state folder's commands start (the `services up --ray`
    head, a sweep's private local Ray): ``<state_dir>/ray``, private like the folder (Ray's
    session logs and Tune's local copies of its state are 0644 files). Where that path is too
    long for Ray's socket paths, ``<tmp>/cvray-<uid>-<hash>/r``: a short folder of this user's
    own (0700; Ray makes its temp dir itself world-writable, so a private parent is what keeps it
    private) in the system temp dir, named after the state folder. Never Ray's shared
    ``/tmp/ray``: ``ray start`` writes its discovery file ``ray_current_cluster`` into its temp
    dir, and every plain ``ray.init()`` of the machine follows that file, to a running head or,
    once it is stopped, into an error."""
    path = state_dir / "ray"
    if len(str(path)) <= _RAY_TEMP_DIR_MAX:
        return str(path)
    digest = hashlib.sha1(str(state_dir.absolute()).encode()).hexdigest()[:10]
    tmp = tempfile.gettempdir()
    base = tmp if len(tmp) <= _RAY_TEMP_DIR_MAX - 28 else "/tmp"
    return os.path.join(base, f"cvray-{os.getuid()}-{digest}", "r")


def make_private_ray_temp_dir(state_dir: Path) -> str:
    """:func:`private_ray_temp_dir`, its parent created (mode 0700) and checked to be this
    user's own real folder: a folder of that name made by someone else, or a link, is refused."""
    path = Path(private_ray_temp_dir(state_dir))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = os.lstat(path.parent)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise UserError(
            f"Ray's temp folder {path.parent} is not this user's own private folder; remove it (or set"
            f" CONTAVSEP_HOME to a shorter path, whose ray/ folder is used instead)"
        )
    path.mkdir(exist_ok=True, mode=0o700)
    return str(path)


def resolve_endpoints(environ: Mapping[str, str] | None = None) -> Endpoints:
    """Endpoints from explicit settings, else the local services' state file, else local files.

    ``environ`` defaults to ``os.environ`` (a mapping can be passed to resolve another process's
    view, e.g. a worker's env).
    """
    from contavsep.storage import S3Settings, parse_uri

    env = os.environ if environ is None else environ
    state_dir = default_state_dir(env)
    state = read_state(state_dir)
    running = state.services

    s3: S3Settings | None
    if any(env.get(name) for name in _S3_ENV):
        s3 = S3Settings.from_env(env)
    elif "s3" in running:
        s3 = local_s3_settings(state_dir, running["s3"].url)
    else:
        s3 = None

    storage_uri = env.get("CONTAVSEP_STORAGE") or ""
    if storage_uri:
        parse_uri(storage_uri)  # a malformed setting fails here, naming the form to use
        if storage_uri.startswith("s3://") and s3 is None:
            s3 = S3Settings.from_env(env)  # AWS itself, default credential chain
    elif s3 is not None:
        storage_uri = f"s3://{DATA_BUCKET}"
    else:
        storage_uri = f"file://{state_dir / 'storage'}"

    mlflow_uri = env.get("MLFLOW_TRACKING_URI") or (running["mlflow"].url if "mlflow" in running else None)

    ray_address = env.get("RAY_ADDRESS") or None
    dashboard = None
    if "ray" in running:
        ray_address = ray_address or running["ray"].address
        dashboard = running["ray"].url
    return Endpoints(
        s3=s3,
        storage_uri=storage_uri.rstrip("/"),
        mlflow_tracking_uri=mlflow_uri,
        ray_address=ray_address,
        state_dir=state_dir,
        ray_dashboard_url=dashboard,
    )


# MLflow tracking URIs contavsep can log to and read from (MLflow 3's file store is legacy,
# read-only; anything else is a typo).
TRACKING_SCHEMES = ("http://", "https://", "sqlite:///", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str, setting: str) -> None:
    """Refuse a tracking URI MLflow cannot serve runs from, naming the ``setting`` it came from."""
    if not uri.startswith(TRACKING_SCHEMES):
        raise SettingsError(
            f"{setting} {uri!r} is not an MLflow tracking server or database: use http://host:port"
            f" (`contavsep services status` shows the local one) or sqlite:///path/mlflow.db"
        )


# `ray job stop` sends SIGTERM, and Ray's job supervisor SIGKILLs the entrypoint
# RAY_JOB_STOP_WAIT_TIME_S later (default 3 s; read from the supervisor's env, i.e. the head's env
# or the job's runtime env): too short for Tune to stop the trials and save its state and for the
# sweep to close its MLflow runs and print how to resume (measured: 25 s for a 2-trial sweep on a
# loaded 2-core machine). The head of `services up --ray` and `services env --runtime-env-json`
# carry it (service_env), so a plain `ray job submit` gets it.
JOB_STOP_GRACE_ENV = {"RAY_JOB_STOP_WAIT_TIME_S": "90"}


def service_env(endpoints: Endpoints) -> dict[str, str]:
    """Environment variables that give another process of this machine (Ray workers, a submitted
    job, the Ray head of ``services up --ray``) the same view of the services: ``CONTAVSEP_*``,
    ``MLFLOW_TRACKING_URI``, the Train V2 switch the trials are written for, and the
    ``ray job stop`` grace period (:data:`JOB_STOP_GRACE_ENV`).

    It names where credentials are, never their values, so it may travel in a Ray runtime env
    (which Ray logs, shows in its job API and keeps in Tune's state). ``CONTAVSEP_S3_KEYS_FILE``
    is the path of a 0600 file with the keys:

    - the local services' keys: their keys file ``<state_dir>/s3-keys.json``;
    - other keys this process was given (``CONTAVSEP_S3_*`` / ``AWS_*`` variables): a copy in the
      0600 file ``<state_dir>/s3-client-keys.json`` (:func:`share_keys`); a process of another
      machine finds no such file and uses its own credential chain;
    - no keys (AWS instance roles, workload identity, K8s Secrets in the pod's env): no file;
      every process uses its own chain.
    """
    env: dict[str, str] = {
        "CONTAVSEP_HOME": str(endpoints.state_dir),
        "CONTAVSEP_STORAGE": endpoints.storage_uri,
        # Train V2 (Tune trial = driver running a TorchTrainer) is the pattern trials use.
        "RAY_TRAIN_V2_ENABLED": "1",
        # Time for a sweep to stop its trials, save Tune's state, close its MLflow runs and print
        # the resume line after `ray job stop` (Ray's job supervisor reads it from its own env:
        # the head's, or the job's runtime env; see JOB_STOP_GRACE_ENV).
        **JOB_STOP_GRACE_ENV,
    }
    s3 = endpoints.s3
    if s3 is not None:
        # Small S3 servers answer recent SDKs' streaming checksums with 411 (see contavsep.storage).
        env["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
        env["AWS_RESPONSE_CHECKSUM_VALIDATION"] = "when_required"
        env["CONTAVSEP_S3_REGION"] = s3.region
        if s3.endpoint_url:
            env["CONTAVSEP_S3_ENDPOINT"] = s3.endpoint_url
        if s3.access_key is not None and s3.secret_key is not None:
            env[KEYS_FILE_ENV] = str(keys_file_of(endpoints.state_dir, s3))
    if endpoints.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = endpoints.mlflow_tracking_uri
    return env


def keys_file_of(state_dir: Path, s3: S3Settings) -> Path:
    """A 0600 file holding ``s3``'s keys: the local services' keys file when they are its keys,
    else :func:`share_keys`'s copy."""
    local = state_dir / KEYS_FILE
    try:
        if read_keys_file(local) == (s3.access_key, s3.secret_key):
            return local
    except SettingsError:
        pass
    return share_keys(state_dir, str(s3.access_key), str(s3.secret_key))


def share_keys(state_dir: Path, access_key: str, secret_key: str) -> Path:
    """The 0600 file ``<state_dir>/s3-client-keys.json`` holding these keys (written if it holds
    others or none): what ``CONTAVSEP_S3_KEYS_FILE`` points this machine's Ray processes to."""
    path = state_dir / CLIENT_KEYS_FILE
    try:
        if read_keys_file(path) == (access_key, secret_key):
            return path
    except SettingsError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps({"access_key": access_key, "secret_key": secret_key}, indent=2) + "\n")
    return path
