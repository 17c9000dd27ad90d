"""`contavsep services`: endpoint resolution, and the real rclone S3 / MLflow / Ray processes.

The S3 + MLflow servers are the session's ``services`` fixture (MLflow takes 15-90 s to start
on 2 shared cores, so it is started once); the up/down cycle restarts that same set, checking
that the data of both survives.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from contavsep import storage
from contavsep_platform import services as local_services
from contavsep_platform.cli import main
from contavsep_platform.settings import (
    KEYS_FILE,
    STATE_FILE,
    ServiceRecord,
    ServicesState,
    read_state,
    resolve_endpoints,
    service_env,
)


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def session_pids(sid: int) -> list[int]:
    """Live, non-zombie processes whose session id is ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] not in "ZX":
                pids.append(int(entry.name))
    return pids


def rest(url: str, body: dict | None = None, method: str | None = None, data: bytes | None = None) -> bytes:
    """One MLflow REST call; JSON body for POSTs, raw bytes for artifact PUTs."""
    payload = json.dumps(body).encode() if body is not None else data
    request = urllib.request.Request(url, data=payload, method=method or ("POST" if payload is not None else "GET"))
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return reply.read()


# ----------------------------------------------------------------------------------------------
# endpoint resolution (no processes)


def test_without_services_everything_is_local_files(tmp_path: Path) -> None:
    endpoints = resolve_endpoints({"CONTAVSEP_HOME": str(tmp_path)})
    assert endpoints.s3 is None and endpoints.mlflow_tracking_uri is None and endpoints.ray_address is None
    assert endpoints.storage_uri == f"file://{tmp_path}/storage"
    assert endpoints.state_dir == tmp_path and endpoints.ray_dashboard_url is None


def test_explicit_settings_win_over_the_running_services(services, platform_home: Path) -> None:
    explicit = {
        "CONTAVSEP_HOME": str(platform_home),
        "CONTAVSEP_S3_ENDPOINT": "https://s3.example.org",
        "CONTAVSEP_S3_ACCESS_KEY": "team-key",
        "CONTAVSEP_S3_SECRET_KEY": "team-secret",
        "CONTAVSEP_STORAGE": "s3://team-bucket/contavsep/",
        "MLFLOW_TRACKING_URI": "https://mlflow.example.org",
        "RAY_ADDRESS": "10.0.0.7:6379",
    }
    remote = resolve_endpoints(explicit)
    assert remote.s3.endpoint_url == "https://s3.example.org" and remote.s3.access_key == "team-key"
    assert remote.storage_uri == "s3://team-bucket/contavsep"
    assert remote.mlflow_tracking_uri == "https://mlflow.example.org" and remote.ray_address == "10.0.0.7:6379"

    local = resolve_endpoints({"CONTAVSEP_HOME": str(platform_home)})
    state = read_state(platform_home)
    assert local.s3.endpoint_url == state.services["s3"].url and local.storage_uri == "s3://contavsep"
    assert local.mlflow_tracking_uri == state.services["mlflow"].url
    assert str(platform_home / KEYS_FILE) in local.s3.keys_from  # errors name the keys' source

    # A process handed service_env() (a Ray worker, a submitted job) sees what the driver sees,
    # finding the keys in the services' keys file.
    shared = service_env(local)
    assert shared["CONTAVSEP_S3_KEYS_FILE"] == str(platform_home / KEYS_FILE)
    assert local.s3.secret_key not in "".join(shared.values()) and local.s3.access_key not in "".join(shared.values())
    worker = resolve_endpoints(shared)
    assert (worker.s3.endpoint_url, worker.s3.access_key, worker.s3.secret_key, worker.s3.region) == (
        local.s3.endpoint_url,
        local.s3.access_key,
        local.s3.secret_key,
        local.s3.region,
    )
    assert (worker.storage_uri, worker.mlflow_tracking_uri, worker.state_dir) == (
        local.storage_uri,
        local.mlflow_tracking_uri,
        local.state_dir,
    )


def test_service_env_names_where_the_keys_are_never_the_keys(tmp_path: Path) -> None:
    """What travels to Ray processes (runtime env, job records, logs) holds no key: explicit keys
    are copied to a 0600 file named by CONTAVSEP_S3_KEYS_FILE, which a worker of this machine
    reads; a worker of another machine (no such file) falls back to its own credential chain."""
    explicit = {
        "CONTAVSEP_HOME": str(tmp_path),
        "CONTAVSEP_S3_ENDPOINT": "https://s3.example.org",
        "CONTAVSEP_S3_ACCESS_KEY": "team-key",
        "CONTAVSEP_S3_SECRET_KEY": "team-secret-0123456789",
    }
    env = service_env(resolve_endpoints(explicit))
    assert not [k for k, v in env.items() if "team-key" in v or "team-secret" in v]
    keys_file = Path(env["CONTAVSEP_S3_KEYS_FILE"])
    assert keys_file.parent == tmp_path and keys_file.stat().st_mode & 0o777 == 0o600
    worker = resolve_endpoints(env)
    assert (worker.s3.endpoint_url, worker.s3.access_key, worker.s3.secret_key) == (
        "https://s3.example.org",
        "team-key",
        "team-secret-0123456789",
    )
    assert str(keys_file) in worker.s3.keys_from  # errors name where the keys came from
    keys_file.unlink()
    elsewhere = resolve_endpoints(env)
    assert elsewhere.s3.access_key is None and "AWS default credentials" in elsewhere.s3.keys_from


def test_malformed_storage_setting_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path))
    monkeypatch.setenv("CONTAVSEP_STORAGE", "relative/dir")
    assert main(["services", "env"]) == 2
    assert "file:///absolute/path" in one_error_line(capsys)


# ----------------------------------------------------------------------------------------------
# bad input: one line, non-zero, nothing started


def test_unknown_command_and_misplaced_flags_are_one_line(capsys) -> None:
    assert main(["services", "restart"]) == 2
    assert "unknown services command 'restart'" in one_error_line(capsys)
    assert main(["services", "down", "--ray"]) == 2
    assert "--ray only applies to `contavsep services up`" in one_error_line(capsys)
    assert main(["services", "up", "--s3-port", "70000"]) == 2
    assert "not a TCP port" in one_error_line(capsys)


def test_port_in_use_is_one_clear_line_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "home"))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert main(["services", "up", "--s3-port", str(port)]) == 2
    err = one_error_line(capsys)
    assert f"port {port} for s3 (--s3-port) is in use by another program" in err
    assert read_state(tmp_path / "home").services == {}


def test_status_without_services_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path))
    assert main(["services", "status"]) == 3
    out = capsys.readouterr().out
    assert "s3      stopped" in out and f"file://{tmp_path}/storage" in out


# ----------------------------------------------------------------------------------------------
# down signals exactly the recorded process trees


def _record(pid: int, cmdline: list[str]) -> ServiceRecord:
    return ServiceRecord(
        name="s3",
        pid=pid,
        cmdline=tuple(cmdline),
        url="http://127.0.0.1:1",
        ports={"s3": 1},
        log="/dev/null",
        started_at=time.time(),
        startup_s=0.1,
    )


def test_down_checks_the_command_line_and_stops_the_whole_session(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # A leader with a child in its session, like `mlflow server` and its uvicorn worker.
    argv = ["sh", "-c", "sleep 300 & wait"]
    tree = subprocess.Popen(argv, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(session_pids(tree.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(session_pids(tree.pid)) == 2

        # The pid now runs something else than recorded (a reused pid): nothing is signalled.
        (home / STATE_FILE).write_text(
            json.dumps(ServicesState(services={"s3": _record(tree.pid, ["rclone", "serve", "s3"])}).to_json())
        )
        assert local_services.down(home) == ["s3"]
        assert tree.poll() is None and len(session_pids(tree.pid)) == 2
        assert read_state(home).services == {}

        # The recorded argv matches: the leader and its child both go.
        (home / STATE_FILE).write_text(json.dumps(ServicesState(services={"s3": _record(tree.pid, argv)}).to_json()))
        assert local_services.down(home) == ["s3"]
        tree.wait(timeout=10)  # (down already reaped its status: it was our child)
        assert session_pids(tree.pid) == [] and not Path(f"/proc/{tree.pid}").exists()
    finally:
        if tree.poll() is None:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()


# ----------------------------------------------------------------------------------------------
# the real services


def test_up_is_idempotent_and_status_prints_urls(services, platform_home: Path, capsys) -> None:
    before = read_state(platform_home).services
    assert main(["services", "up"]) == 0
    after = read_state(platform_home).services
    assert {n: r.pid for n, r in after.items()} == {n: r.pid for n, r in before.items()}  # no second copy
    out = capsys.readouterr().out
    assert f"s3      running   pid {before['s3'].pid}" in out and before["s3"].url in out
    assert f"mlflow  running   pid {before['mlflow'].pid}" in out and services.mlflow_tracking_uri in out

    assert main(["services", "status"]) == 0
    out = capsys.readouterr().out
    assert "storage  s3://contavsep at " + services.s3.endpoint_url in out

    # Secrets: 0600 files, and never on a command line (world-readable in /proc).
    for name in (KEYS_FILE, STATE_FILE):
        assert (platform_home / name).stat().st_mode & 0o777 == 0o600
    secret = services.s3.secret_key
    assert secret and secret not in (Path(f"/proc/{before['s3'].pid}/cmdline").read_bytes().decode())
    assert (platform_home / "logs" / "s3.log").is_file() and (platform_home / "logs" / "mlflow.log").is_file()


def test_mlflow_rest_api_with_artifacts_proxied_to_s3(services) -> None:
    api = f"{services.mlflow_tracking_uri}/api/2.0"
    name = f"rest-{secrets.token_hex(4)}"
    experiment = json.loads(rest(f"{api}/mlflow/experiments/create", {"name": name}))["experiment_id"]
    run = json.loads(rest(f"{api}/mlflow/runs/create", {"experiment_id": experiment}))["run"]["info"]["run_id"]
    for step, value in enumerate([1.5, 2.5]):
        rest(
            f"{api}/mlflow/runs/log-metric", {"run_id": run, "key": "sdr", "value": value, "timestamp": 0, "step": step}
        )
    history = json.loads(rest(f"{api}/mlflow/metrics/get-history?run_id={run}&metric_key=sdr"))["metrics"]
    assert sorted((m["step"], m["value"]) for m in history) == [(0, 1.5), (1, 2.5)]

    payload = b"separated audio would go here\n"
    path = f"{experiment}/{run}/artifacts/notes/example.txt"
    rest(f"{api}/mlflow-artifacts/artifacts/{path}", method="PUT", data=payload)
    assert rest(f"{api}/mlflow-artifacts/artifacts/{path}") == payload
    # It really sits in the mlflow-artifacts bucket of the local S3 server.
    assert storage.read_bytes(f"s3://mlflow-artifacts/{path}", services.s3) == payload


def test_down_stops_everything_and_up_brings_the_data_back(services, platform_home: Path, capsys) -> None:
    marker = f"s3://contavsep/tests/survives-{secrets.token_hex(4)}.txt"
    storage.write_bytes_atomic(marker, b"still here", services.s3)
    api = f"{services.mlflow_tracking_uri}/api/2.0/mlflow"
    experiment_name = f"survives-{secrets.token_hex(4)}"
    experiment = json.loads(rest(f"{api}/experiments/create", {"name": experiment_name}))["experiment_id"]

    state = read_state(platform_home)
    with_ray = "ray" in state.services  # another test module may have started the session's Ray head
    assert main(["services", "down"]) == 0
    assert "stopped: " in capsys.readouterr().out
    for record in state.services.values():
        assert session_pids(record.pid) == [], f"{record.name} left processes behind"
    assert read_state(platform_home).services == {}
    assert all(s.state == "stopped" for s in local_services.status(platform_home))
    assert main(["services", "status"]) == 3
    capsys.readouterr()

    assert main(["services", "up", *(["--ray"] if with_ray else [])]) == 0
    again = read_state(platform_home)
    assert {n: r.url for n, r in again.services.items()} == {n: r.url for n, r in state.services.items()}  # same ports
    assert storage.read_bytes(marker, services.s3) == b"still here"
    found = json.loads(rest(f"{api}/experiments/get-by-name?experiment_name={experiment_name}"))
    assert found["experiment"]["experiment_id"] == experiment
    assert all(s.healthy for s in local_services.status(platform_home) if s.record is not None)


# ----------------------------------------------------------------------------------------------
# Ray: the head for `ray job submit`, and local Ray workers finding the services


@pytest.mark.slow
def test_ray_head_jobs_run_with_the_services_env(ray_head, services, capsys) -> None:
    assert main(["services", "status"]) == 0
    out = capsys.readouterr().out
    assert "ray     running" in out and ray_head.ray_dashboard_url in out
    probe = (
        "import os, shutil; from contavsep_platform.settings import resolve_endpoints; e = resolve_endpoints(); "
        "print('PROBE', e.mlflow_tracking_uri, e.storage_uri, e.s3.endpoint_url, bool(shutil.which('contavsep')))"
    )
    ray_cli = Path(sys.executable).parent / "ray"
    done = subprocess.run(
        [str(ray_cli), "job", "submit", "--address", ray_head.ray_dashboard_url, "--", "python", "-c", probe],
        # From a neutral folder: the job must find contavsep through the head's env, not the cwd.
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE"))
    assert line.split()[1:] == [services.mlflow_tracking_uri, "s3://contavsep", services.s3.endpoint_url, "True"]


@pytest.mark.slow
def test_ray_local_workers_find_the_services(ray_local, services) -> None:
    @ray_local.remote
    def view() -> tuple:
        from contavsep_platform.settings import resolve_endpoints

        e = resolve_endpoints()
        return e.storage_uri, e.mlflow_tracking_uri, e.s3.endpoint_url

    assert ray_local.get(view.remote(), timeout=120) == (
        services.storage_uri,
        services.mlflow_tracking_uri,
        services.s3.endpoint_url,
    )


def test_cli_commands_find_the_local_services_without_flags(services, tmp_path):
    # No CONTAVSEP_S3_* / AWS_* in the environment: the CLI reads the services' state file.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTAVSEP_S3_", "AWS_", "MLFLOW_"))}
    exe = str(Path(sys.executable).parent / "contavsep")
    uri = "s3://contavsep/datasets/cli-finds-services"
    synth = subprocess.run(
        [exe, "data", "synth", "--out", uri, "--classes", "2", "--clips-per-class", "1,0,1", "--seconds", "0.6"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert synth.returncode == 0, synth.stderr
    info = subprocess.run([exe, "data", "info", uri], env=env, capture_output=True, text=True, timeout=300)
    assert info.returncode == 0 and "accordion" in info.stdout, info.stderr


def test_in_process_commands_leave_the_environment_as_they_found_it(services, tmp_path):
    import os

    from contavsep_platform.cli import main

    before = dict(os.environ)
    assert main(["data", "info", "file:///nonexistent-dataset"]) == 2  # runs with the services' env, fails cleanly
    assert dict(os.environ) == before
