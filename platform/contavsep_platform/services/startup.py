"""Starting one service: build its command, launch it, record it in the state file, wait for its
first healthy answer (retrying a start its :class:`~contavsep_platform.services.specs.Retry`
allows), and leave nothing half-started behind when that fails."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from contavsep_platform.services.errors import ServiceError
from contavsep_platform.services.health import wait_healthy
from contavsep_platform.services.launch import launch
from contavsep_platform.services.logs import last_run_log
from contavsep_platform.services.procs import reap, stop_record
from contavsep_platform.services.specs import Service
from contavsep_platform.services.state import write_state
from contavsep_platform.settings import read_state

Echo = Callable[[str], None]


def start(
    service: Service,
    state_dir: Path,
    ports: dict[str, int],
    depends: dict[str, str],
    num_cpus: int,
    ray_temp_dir: str | None,
    echo: Echo,
) -> None:
    attempts = 1 if service.retry is None else service.retry.attempts
    for attempt in range(1, attempts + 1):
        try:
            _start_once(service, state_dir, ports, depends, num_cpus, ray_temp_dir, echo)
            return
        except ServiceError:
            log = service.log_file(state_dir)
            if attempt == attempts or service.retry is None or service.retry.log_line not in last_run_log(log):
                raise
            echo(f"{service.name}: {service.retry.reason}; retrying")


def _start_once(
    service: Service,
    state_dir: Path,
    ports: dict[str, int],
    depends: dict[str, str],
    num_cpus: int,
    ray_temp_dir: str | None,
    echo: Echo,
) -> None:
    name = service.name
    url = service.url(ports)
    cmd, env = service.command(state_dir, ports, num_cpus, ray_temp_dir)
    address = service.address(ports)
    log = service.log_file(state_dir)
    echo(f"{name}: starting on {url} (log: {log})")
    cwd = state_dir / service.workdir
    record, process = launch(name, cmd, env, log, ports, url, cwd=cwd, address=address, depends=depends)
    state = read_state(state_dir)
    write_state(state_dir, replace(state, ports={**state.ports, **ports}, services={**state.services, name: record}))
    try:
        answers = service.health(record, state_dir)
        done = service.started(record, state_dir) if service.started is not None else (lambda: True)
        startup = wait_healthy(record, lambda: answers() and done(), service.startup_timeout_s, process)
        if service.on_ready is not None:
            service.on_ready(record, state_dir)
    except BaseException:
        # No half-started service stays behind (also on Ctrl-C): stop it and forget it.
        stop_record(record, grace_s=5.0)
        reap(record.pid)
        state = read_state(state_dir)
        write_state(state_dir, replace(state, services={k: v for k, v in state.services.items() if k != name}))
        raise
    state = read_state(state_dir)
    record = replace(record, startup_s=round(startup, 2))
    write_state(state_dir, replace(state, services={**state.services, name: record}))
    echo(f"{name}: healthy after {startup:.1f} s (pid {record.pid})")
