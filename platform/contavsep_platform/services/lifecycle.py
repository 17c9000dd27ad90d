"""``up``, ``down`` and ``status`` of the local services, and the port checks ``up`` makes before
anything starts."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from contavsep_platform.services.errors import ServiceError
from contavsep_platform.services.health import healthy, wait_healthy
from contavsep_platform.services.procs import is_alive, reap, service_pids, stop_record
from contavsep_platform.services.ray_discovery import forget_head, shared_discovery_file
from contavsep_platform.services.specs import (
    DEFAULT_PORTS,
    PORT_FLAGS,
    RAY,
    SERVICE_SPECS,
    SERVICES,
)
from contavsep_platform.services.startup import Echo, start
from contavsep_platform.services.state import prepare_state_dir, state_lock, write_state
from contavsep_platform.settings import (
    STATE_FILE,
    ServiceRecord,
    default_state_dir,
    read_state,
)

# `ray start`'s default --min-worker-port / --max-worker-port: Ray refuses its own ports in there.
RAY_WORKER_PORTS = range(10002, 19999 + 1)


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


def _quiet(_: str) -> None:
    """The default progress callback: say nothing."""


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


def check_ports(ports: Mapping[str, int]) -> None:
    """Refuse, before anything starts, a port outside 1-65535, one port given to two roles (the
    second server would fail after the first started), or a Ray head port inside Ray's
    worker-port range (:data:`RAY_WORKER_PORTS`; Ray would refuse it with a vague message)."""
    seen: dict[int, str] = {}
    for role, port in ports.items():
        if not 1 <= port <= 65535:
            raise ServiceError(f"{PORT_FLAGS[role]} {port} is not a TCP port (1-65535)")
        if port in seen:
            raise ServiceError(
                f"{PORT_FLAGS[seen[port]]} and {PORT_FLAGS[role]} are both {port}: every service needs"
                f" its own port; nothing was started"
            )
        seen[port] = role
        if role in RAY.roles and port in RAY_WORKER_PORTS:
            raise ServiceError(
                f"{PORT_FLAGS[role]} {port} is inside Ray's worker-port range {RAY_WORKER_PORTS.start}-"
                f"{RAY_WORKER_PORTS.stop - 1}: choose a port outside it; nothing was started"
            )


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
    before = read_state(state_dir)  # before prepare_state_dir: a refused port list writes nothing
    chosen = [s for s in SERVICE_SPECS if not s.optional or ray or s.name in before.services]
    check_ports({role: {**DEFAULT_PORTS, **before.ports, **explicit}[role] for s in chosen for role in s.roles})
    prepare_state_dir(state_dir)
    with state_lock(state_dir):
        state = read_state(state_dir)
        wanted = {**DEFAULT_PORTS, **state.ports, **explicit}
        options = dict(state.options)
        if num_cpus is not None:
            options["num_cpus"] = str(num_cpus)
        if ray_temp_dir is not None:
            options["ray_temp_dir"] = ray_temp_dir
        head_cpus = int(options.get("num_cpus") or os.cpu_count() or 1)
        head_temp_dir = options.get("ray_temp_dir") or None
        chosen = [s for s in SERVICE_SPECS if not s.optional or ray or s.name in state.services]

        # Pass 1, before anything starts: conflicts with running services and busy ports.
        for service in chosen:
            name = service.name
            record = state.services.get(name)
            mine = {role: wanted[role] for role in service.roles}
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
                stop_record(record, service.stop_grace_s)  # orphans of a dead leader may still hold its ports
            for role, port in mine.items():
                if not _port_free(port):
                    raise ServiceError(
                        f"port {port} for {name} ({PORT_FLAGS[role]}) is in use by another program: choose a free"
                        f" one with {PORT_FLAGS[role]} PORT, or stop that program; nothing was started"
                    )

        # Pass 2: start in dependency order.
        for service in chosen:
            name = service.name
            state = read_state(state_dir)
            record = state.services.get(name)
            mine = {role: wanted[role] for role in service.roles}
            depends = service.depends(state_dir)
            if record is not None and is_alive(record):
                if dict(record.depends) == depends:
                    if not healthy(service.health(record, state_dir)):
                        echo(f"{name}: running (pid {record.pid}) but not answering yet; waiting")
                        wait_healthy(record, service.health(record, state_dir), service.startup_timeout_s, None)
                    echo(f"{name}: already running (pid {record.pid}) at {record.url}")
                    continue
                echo(f"{name}: restarting, the services it uses moved ({dict(record.depends)} -> {depends})")
                stop_record(record, service.stop_grace_s)
            elif record is not None:
                echo(f"{name}: recorded pid {record.pid} is gone; restarting it")
                stop_record(record, service.stop_grace_s)  # leftovers of its session, if any
            if service.head_options:
                state = read_state(state_dir)
                write_state(state_dir, replace(state, options={**state.options, **options}))
            start(service, state_dir, mine, depends, head_cpus, head_temp_dir, echo)
        return status(state_dir)


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
    with state_lock(state_dir):
        for service in reversed(SERVICE_SPECS):
            name = service.name
            if name not in chosen:
                continue
            record = read_state(state_dir).services.get(name)
            if record is None:
                continue
            count = stop_record(record, service.stop_grace_s)
            reap(record.pid)
            if name == "ray" and record.address and forget_head(record.address):
                echo(f"{name}: removed Ray's discovery file {shared_discovery_file()}, which named this head")
            state = read_state(state_dir)
            write_state(state_dir, replace(state, services={k: v for k, v in state.services.items() if k != name}))
            echo(
                f"{name}: stopped ({count} process{'es' if count != 1 else ''})"
                if count
                else f"{name}: was not running; record removed"
            )
            stopped.append(name)
    return stopped


def status(state_dir: Path | None = None) -> list[ServiceStatus]:
    """The state of each service (in start order), health-checked."""
    state_dir = (state_dir or default_state_dir()).absolute()
    state = read_state(state_dir)
    result = []
    for service in SERVICE_SPECS:
        name = service.name
        record = state.services.get(name)
        if record is None:
            result.append(ServiceStatus(name, "stopped", None))
            continue
        pids = tuple(service_pids(record))
        if not is_alive(record):
            result.append(ServiceStatus(name, "dead", record, pids))
        else:
            state_now = "running" if healthy(service.health(record, state_dir)) else "unhealthy"
            result.append(ServiceStatus(name, state_now, record, pids))
    return result
