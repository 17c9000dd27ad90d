"""Startup time and peak memory of the local services: ``python -m benchmarks.bench_services``.

Starts the services in a temp state folder on free ports (exactly as ``contavsep services up``
does), samples the memory of every process in each service's session while they start, idle and
serve a small workload, then stops them. Per service it prints:

- startup: launch -> first healthy answer (the health checks of ``up``);
- peak RSS: the largest sampled sum of ``VmRSS`` over the service's processes (shared pages are
  counted once per process, so this overstates what several Python processes really use);
- peak PSS: the same with ``Pss`` (shared pages split between the processes that map them);
- processes: how many processes the service runs;
- stop: ``down`` for that service, SIGTERM -> all gone.

Workload: S3 put/get of 16 x 1 MiB objects; MLflow: 200 metric points and 4 x 256 KiB artifacts
through the S3 proxy; Ray (``--ray``): one ``ray job submit`` of 20 tiny tasks (its workers run
in the head's session and are counted).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contavsep_platform.settings import Endpoints


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _kib(pid: int, path: str, key: str) -> int:
    """One ``key:  N kB`` value of a /proc file (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class MemorySampler:
    """Samples, every ``interval_s``, RSS and PSS sums over each recorded service's session."""

    def __init__(self, state_dir: Path, interval_s: float = 0.5):
        self.state_dir, self.interval_s = state_dir, interval_s
        self.peak_rss: dict[str, int] = {}
        self.peak_pss: dict[str, int] = {}
        self.processes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        from contavsep_platform.services import service_pids
        from contavsep_platform.settings import SettingsError, read_state

        try:
            records = read_state(self.state_dir).services
        except SettingsError:  # caught mid-write by another thread's replace: next sample
            return
        for name, record in records.items():
            pids = service_pids(record)
            rss = sum(_kib(pid, "status", "VmRSS") for pid in pids)
            pss = sum(_kib(pid, "smaps_rollup", "Pss") for pid in pids)
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            self.peak_pss[name] = max(self.peak_pss.get(name, 0), pss)
            self.processes[name] = max(self.processes.get(name, 0), len(pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


def _workload(endpoints: Endpoints, with_ray: bool) -> None:
    from contavsep import storage

    s3 = endpoints.s3
    blob = secrets.token_bytes(1 << 20)
    for i in range(16):
        uri = f"s3://contavsep/bench/object-{i}.bin"
        storage.write_bytes_atomic(uri, blob, s3)
        assert storage.read_bytes(uri, s3) == blob
    storage.delete_prefix("s3://contavsep/bench", s3)

    api = f"{endpoints.mlflow_tracking_uri}/api/2.0"

    def call(url: str, body: dict | None = None, data: bytes | None = None, method: str | None = None) -> bytes:
        payload = json.dumps(body).encode() if body is not None else data
        request = urllib.request.Request(url, data=payload, method=method or ("POST" if payload is not None else "GET"))
        if body is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.read()

    exp = json.loads(call(f"{api}/mlflow/experiments/create", {"name": f"bench-{secrets.token_hex(4)}"}))[
        "experiment_id"
    ]
    run = json.loads(call(f"{api}/mlflow/runs/create", {"experiment_id": exp}))["run"]["info"]["run_id"]
    for step in range(0, 200, 50):
        metrics = [{"key": "sdr", "value": float(k), "timestamp": 0, "step": k} for k in range(step, step + 50)]
        call(f"{api}/mlflow/runs/log-batch", {"run_id": run, "metrics": metrics})
    artifact = secrets.token_bytes(256 << 10)
    for i in range(4):
        path = f"{exp}/{run}/artifacts/bench-{i}.bin"
        call(f"{api}/mlflow-artifacts/artifacts/{path}", data=artifact, method="PUT")
        assert call(f"{api}/mlflow-artifacts/artifacts/{path}") == artifact

    if with_ray:
        assert endpoints.ray_dashboard_url, "with_ray: the Ray head's dashboard URL is in the services' state"
        probe = "import ray; ray.init(); f = ray.remote(lambda x: x * x); print('SUM', sum(ray.get([f.remote(i) for i in range(20)])))"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ray.scripts.scripts",
                "job",
                "submit",
                "--address",
                endpoints.ray_dashboard_url,
                "--",
                "python",
                "-c",
                probe,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "SUM 2470" not in done.stdout:
            raise RuntimeError(f"the Ray job failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_services", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-ray", action="store_true", help="only S3 and MLflow (no Ray head)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds of idle sampling after startup")
    args = parser.parse_args(argv)

    from contavsep_platform import services
    from contavsep_platform.settings import read_state, resolve_endpoints

    with_ray = not args.no_ray
    state_dir = Path(tempfile.mkdtemp(prefix="cvbench-"))
    ray_temp = tempfile.mkdtemp(prefix="cvray-", dir="/tmp") if with_ray else None
    roles = ["s3", "mlflow"] + (list(services.SERVICE_PORTS["ray"]) if with_ray else [])
    ports = {role: _free_port() for role in roles}
    saved = {k: os.environ.get(k) for k in ("CONTAVSEP_HOME",)}
    os.environ["CONTAVSEP_HOME"] = str(state_dir)
    stop_s: dict[str, float] = {}
    try:
        with MemorySampler(state_dir) as sampler:
            services.up(
                state_dir,
                ports=ports,
                ray=with_ray,
                num_cpus=2,
                ray_temp_dir=ray_temp,
                echo=lambda line: print(line, file=sys.stderr, flush=True),
            )
            startup = {n: r.startup_s for n, r in read_state(state_dir).services.items()}
            time.sleep(args.idle_s)
            idle_rss = dict(sampler.peak_rss)
            started = time.perf_counter()
            _workload(resolve_endpoints(), with_ray)
            workload_s = time.perf_counter() - started
            sampler.sample()
            for name in reversed(services.SERVICES):
                if name in startup:
                    t0 = time.perf_counter()
                    services.down(state_dir, names=[name])
                    stop_s[name] = time.perf_counter() - t0
    finally:
        services.down(state_dir)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(state_dir, ignore_errors=True)
        if ray_temp:
            shutil.rmtree(ray_temp, ignore_errors=True)

    print(
        f"{'service':<8} {'startup s':>9} {'idle RSS MiB':>12} {'peak RSS MiB':>12} {'peak PSS MiB':>12} {'processes':>9} {'stop s':>7}"
    )
    for name in services.SERVICES:
        if name not in startup:
            continue
        print(
            f"{name:<8} {startup[name] or 0:>9.1f} {idle_rss.get(name, 0) / 1024:>12.0f} {sampler.peak_rss.get(name, 0) / 1024:>12.0f} "
            f"{sampler.peak_pss.get(name, 0) / 1024:>12.0f} {sampler.processes.get(name, 0):>9d} {stop_s.get(name, 0):>7.1f}"
        )
    print(f"workload {workload_s:.1f} s; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
