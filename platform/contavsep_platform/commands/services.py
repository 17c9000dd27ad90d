"""`contavsep services up | down | status | env`: the embedded local S3, MLflow and Ray head."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ACTIONS = ("up", "down", "status", "env")
_PORT_HELP = {
    "s3": "the S3 server",
    "mlflow": "the MLflow server",
    "ray": "the Ray head's GCS (RAY_ADDRESS)",
    "dashboard": "the Ray dashboard and job API",
    "ray_client": "the Ray client server (ray://)",
    "dashboard_agent": "the Ray head's dashboard agent",
}
_RAY_ROLES = ("ray", "dashboard", "ray_client", "dashboard_agent")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "services",
        help="start, stop or inspect the local S3 / MLflow / Ray services",
        description=(
            "up: start a local S3 server (rclone) and an MLflow server (and with --ray a Ray head for "
            "`ray job submit`); idempotent. down: stop exactly what `up` started (data is kept). "
            "status: URLs, pids and health (exit 0 all running, 1 some recorded service down, 3 none "
            "recorded). env: the variables that point other processes at these services. "
            "State, keys, data and logs live in $CONTAVSEP_HOME (default ~/.contavsep)."
        ),
    )
    p.add_argument("action", metavar="{up,down,status,env}", help="what to do")
    p.add_argument(
        "--ray", action="store_true", help="up: also start a local Ray head (dashboard and job API on 127.0.0.1)"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="up --ray: CPUs the Ray head offers (default: all)")
    from contavsep_platform.services import DEFAULT_PORTS, PORT_FLAGS

    for role, flag in PORT_FLAGS.items():
        p.add_argument(
            flag,
            dest=f"port_{role}",
            type=int,
            default=None,
            metavar="PORT",
            help=f"up: port of {_PORT_HELP[role]} (default {DEFAULT_PORTS[role]}, or the one last used)",
        )
    p.add_argument(
        "--runtime-env-json",
        action="store_true",
        help='env: print {"env_vars": {...}} for `ray job submit --runtime-env-json` instead of shell exports',
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from contavsep_platform import services
    from contavsep_platform.errors import UserError

    if args.action not in ACTIONS:
        raise UserError(f"unknown services command '{args.action}': use one of {', '.join(ACTIONS)}")
    ports = {
        role: getattr(args, f"port_{role}")
        for role in services.DEFAULT_PORTS
        if getattr(args, f"port_{role}") is not None
    }
    up_only = [
        flag
        for flag, given in [("--ray", args.ray), ("--num-cpus", args.num_cpus is not None)]
        + [(services.PORT_FLAGS[r], True) for r in ports]
        if given
    ]
    if args.action != "up" and up_only:
        raise UserError(f"{up_only[0]} only applies to `contavsep services up`")
    if args.action != "env" and args.runtime_env_json:
        raise UserError("--runtime-env-json only applies to `contavsep services env`")
    for role, port in ports.items():
        if not 1 <= port <= 65535:
            raise UserError(f"{services.PORT_FLAGS[role]} {port} is not a TCP port (1-65535)")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UserError(f"--num-cpus {args.num_cpus} must be at least 1")

    from contavsep_platform.settings import default_state_dir

    state_dir = default_state_dir()
    if args.action == "up":
        recorded_ray = any(s.record is not None for s in services.status(state_dir) if s.name == "ray")
        ray_flags = [services.PORT_FLAGS[r] for r in ports if r in _RAY_ROLES]
        if ray_flags and not (args.ray or recorded_ray):
            raise UserError(f"{ray_flags[0]} is a Ray head port: add --ray")
        report = services.up(
            state_dir,
            ports=ports,
            ray=args.ray,
            num_cpus=args.num_cpus,
            echo=lambda line: print(line, file=sys.stderr, flush=True),
        )
        print_status(report, state_dir)
        print("stop them with: contavsep services down   (data, keys and ports are kept for the next `up`)")
        return 0
    if args.action == "down":
        stopped = services.down(state_dir, echo=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing to stop (no services recorded in {state_dir})")
        return 0
    if args.action == "env":
        return print_env(args.runtime_env_json)
    report = services.status(state_dir)
    print_status(report, state_dir)
    if all(s.record is None for s in report):
        return 3
    return 0 if all(s.healthy for s in report if s.record is not None) else 1


def print_status(report: list, state_dir: Path) -> None:
    """The human-readable status: one line per service, then what other commands will use."""
    from contavsep_platform.settings import KEYS_FILE, resolve_endpoints

    print(f"contavsep services (state folder {state_dir})")
    for s in report:
        if s.record is None:
            hint = "  (start with `contavsep services up --ray`)" if s.name == "ray" else ""
            print(f"  {s.name:<7} stopped{hint}")
            continue
        r = s.record
        startup = f"  startup {r.startup_s:.1f} s" if r.startup_s is not None else ""
        extra = f"  RAY_ADDRESS={r.address}" if r.address else ""
        pids = f"  processes {len(s.pids)}" if len(s.pids) > 1 else ""
        print(f"  {s.name:<7} {s.state:<9} pid {r.pid:<7} {r.url}{extra}{startup}{pids}  log {r.log}")
    endpoints = resolve_endpoints()
    print("commands started from this shell use:")
    keys = f"  (keys: {state_dir / KEYS_FILE})" if endpoints.s3 and "keys file" in endpoints.s3.keys_from else ""
    print(f"  storage  {endpoints.storage_uri}" + (f" at {endpoints.s3.endpoint_label}" if endpoints.s3 else "") + keys)
    print(f"  mlflow   {endpoints.mlflow_tracking_uri or '(none: tracking off)'}")
    print(f"  ray      {endpoints.ray_address or '(local Ray started in-process)'}")
    if endpoints.ray_dashboard_url:
        print(
            f"submit a sweep: ray job submit --address {endpoints.ray_dashboard_url} --working-dir . -- "
            f"contavsep sweep search_spaces/smoke.yaml"
        )


def print_env(runtime_env_json: bool) -> int:
    """Print the services' variables: shell ``export`` lines, or a Ray runtime env. They say where
    the S3 keys are (``CONTAVSEP_S3_KEYS_FILE``), never the keys (see ``settings.service_env``).
    The runtime env is for a cluster's jobs: it leaves out this machine's paths (state folder,
    keys file), since the nodes have their own (cluster/README.md)."""
    from contavsep_platform.settings import (
        KEYS_FILE_ENV,
        resolve_endpoints,
        service_env,
    )

    env = service_env(resolve_endpoints())
    if runtime_env_json:
        print(json.dumps({"env_vars": {k: v for k, v in env.items() if k not in ("CONTAVSEP_HOME", KEYS_FILE_ENV)}}))
    else:
        for key, value in sorted(env.items()):
            print(f"export {key}={shlex.quote(value)}")
    return 0
