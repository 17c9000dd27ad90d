"""The local services, one frozen :class:`Service` record each: its ports (role, default, flag),
how its command is built, what its health check is, how long it may take to start and to stop,
where it runs and logs, and what happens around its start.

:data:`SERVICE_SPECS` is the start order (stopped in reverse); :data:`SERVICES`,
:data:`DEFAULT_PORTS`, :data:`PORT_FLAGS` and :data:`SERVICE_PORTS` are views of these records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from contavsep_platform.services.health import mlflow_check, ray_check, ray_started, s3_check
from contavsep_platform.services.launch import (
    HOST,
    create_buckets,
    mlflow_command,
    mlflow_depends,
    ray_command,
    ray_depends,
    s3_command,
    s3_depends,
)
from contavsep_platform.settings import ServiceRecord

# (state folder, its ports by role, the Ray head's CPUs, the Ray head's temp dir) -> (argv, environment)
CommandBuilder = Callable[[Path, Mapping[str, int], int, str | None], tuple[list[str], dict[str, str]]]
# (its record, state folder) -> a cheap callable answering whether the service answers its health request
HealthCheck = Callable[[ServiceRecord, Path], Callable[[], bool]]


@dataclass(frozen=True)
class Port:
    """One port a service listens on: its role (the key in the state file's ``ports``), its
    default and the ``contavsep services up`` flag that changes it."""

    role: str
    default: int
    flag: str


@dataclass(frozen=True)
class Retry:
    """A failed start that is tried again: when the latest start's log holds ``log_line``, up to
    ``attempts`` starts in all, saying ``reason`` before each new one."""

    log_line: str
    attempts: int
    reason: str


@dataclass(frozen=True)
class Service:
    """Everything ``up``, ``down`` and ``status`` know about one service."""

    name: str
    ports: tuple[Port, ...]  # every port it listens on
    url_role: str  # the port of its URL (S3 endpoint / MLflow tracking URI / Ray dashboard)
    command: CommandBuilder  # argv and environment of its process
    # The URLs it bakes into its environment at start; a change means a restart.
    depends: Callable[[Path], dict[str, str]]
    health: HealthCheck  # whether it answers (see :mod:`contavsep_platform.services.health`)
    # Seconds to the first healthy answer.
    startup_timeout_s: float
    # Seconds between SIGTERM and SIGKILL at `down`.
    stop_grace_s: float
    workdir: str = ""  # the folder it runs in, relative to the state folder
    address_role: str | None = None  # the port whose host:port is recorded as its address (RAY_ADDRESS)
    optional: bool = False  # started only when asked for (`up --ray`) or already recorded
    head_options: bool = False  # its command uses the `up` options (num_cpus, ray_temp_dir): saved before it starts
    retry: Retry | None = None
    on_ready: Callable[[ServiceRecord, Path], None] | None = None  # run once it answers, before it counts as started
    # Whether its launcher has finished starting it, checked (with ``health``) only while `up` waits:
    # a process can answer before its launcher is done.
    started: HealthCheck | None = None

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(port.role for port in self.ports)

    def url(self, ports: Mapping[str, int]) -> str:
        return f"http://{HOST}:{ports[self.url_role]}"

    def address(self, ports: Mapping[str, int]) -> str | None:
        return None if self.address_role is None else f"{HOST}:{ports[self.address_role]}"

    def log_file(self, state_dir: Path) -> Path:
        return state_dir / "logs" / f"{self.name}.log"


S3 = Service(
    name="s3",
    ports=(Port("s3", 9900, "--s3-port"),),
    url_role="s3",
    command=s3_command,
    depends=s3_depends,
    health=s3_check,
    startup_timeout_s=60.0,
    stop_grace_s=10.0,
    on_ready=create_buckets,
)

MLFLOW = Service(
    name="mlflow",
    ports=(Port("mlflow", 5000, "--mlflow-port"),),
    url_role="mlflow",
    command=mlflow_command,
    depends=mlflow_depends,
    health=mlflow_check,
    startup_timeout_s=300.0,  # its first start migrates its database: measured 60+ s on 2 busy cores
    stop_grace_s=30.0,
    # MLflow resolves relative defaults (./mlruns, ./mlartifacts) against its working directory.
    workdir="mlflow",
)

# `ray start` gives the head's raylet a fixed 30 s (not configurable) to register with the GCS;
# on an overloaded machine (load 10-20 on 2 cores, measured here) that fails with this line,
# and a later try usually passes.
_RAY_OVERLOAD = "timed out during startup"
_RAY_ATTEMPTS = 3

RAY = Service(
    name="ray",
    ports=(
        Port("ray", 6379, "--ray-port"),  # Ray GCS (RAY_ADDRESS=127.0.0.1:6379)
        Port("dashboard", 8265, "--dashboard-port"),  # Ray dashboard and job submission API
        Port("ray_client", 10001, "--ray-client-port"),  # Ray client server (ray://)
        Port("dashboard_agent", 52365, "--dashboard-agent-port"),  # the head node's dashboard agent (HTTP)
    ),
    url_role="dashboard",
    command=ray_command,
    depends=ray_depends,
    health=ray_check,
    started=ray_started,
    startup_timeout_s=300.0,  # a Ray head measured ~45 s on 2 busy cores
    stop_grace_s=16.0,  # as `ray stop`
    address_role="ray",
    optional=True,
    head_options=True,
    retry=Retry(
        _RAY_OVERLOAD, _RAY_ATTEMPTS, "the head's raylet did not register within Ray's 30 s (machine overloaded?)"
    ),
)

SERVICE_SPECS: tuple[Service, ...] = (S3, MLFLOW, RAY)  # start order; stopped in reverse
BY_NAME: dict[str, Service] = {service.name: service for service in SERVICE_SPECS}
SERVICES = tuple(service.name for service in SERVICE_SPECS)

# Port roles, their defaults and the `contavsep services up` flag that changes each.
DEFAULT_PORTS: dict[str, int] = {port.role: port.default for service in SERVICE_SPECS for port in service.ports}
PORT_FLAGS: dict[str, str] = {port.role: port.flag for service in SERVICE_SPECS for port in service.ports}
SERVICE_PORTS: dict[str, tuple[str, ...]] = {service.name: service.roles for service in SERVICE_SPECS}
