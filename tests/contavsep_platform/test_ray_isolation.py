"""Which Ray a command uses, and who can reach it.

- the `services up --ray` head listens on 127.0.0.1 only (every process of its session: GCS,
  raylet, object manager, agents, metrics, client server, dashboard, workers);
- a sweep without RAY_ADDRESS or a services head runs on a private local Ray, also on 127.0.0.1
  only, even while another head runs on the machine and Ray's discovery file names it; that
  head sees no job of the sweep.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from contavsep_platform import services as local_services
from contavsep_platform.settings import read_state
from contavsep_platform.spaces import parse_space

LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"), ipaddress.ip_address("::ffff:127.0.0.1")}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket of the machine."""
    found: dict[int, tuple[str, int]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints the address as 32-bit words in host (little-endian) order.
            ip = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
            found[int(fields[9])] = (str(ipaddress.ip_address(ip)), int(hex_port, 16))
    return found


def listening_sockets(pids: Iterable[int]) -> dict[int, list[tuple[str, int]]]:
    """pid -> the (address, port) its listening TCP sockets are bound to."""
    table = _listening()
    result: dict[int, list[tuple[str, int]]] = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # exited meanwhile
            continue
        inodes = [int(link[8:-1]) for link in links if link.startswith("socket:[")]
        result[pid] = [table[i] for i in inodes if i in table]
    return result


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def assert_loopback_only(sockets: dict[int, list[tuple[str, int]]]) -> set[int]:
    """Every listening socket is on a loopback address; returns their ports."""
    open_ = {pid: [s for s in socks if ipaddress.ip_address(s[0]) not in LOOPBACK] for pid, socks in sockets.items()}
    open_ = {pid: socks for pid, socks in open_.items() if socks}
    detail = {
        pid: (Path(f"/proc/{pid}/cmdline").read_bytes()[:120], socks)
        for pid, socks in open_.items()
        if Path(f"/proc/{pid}").exists()
    }
    assert not open_, f"listening beyond 127.0.0.1: {detail}"
    return {port for socks in sockets.values() for _, port in socks}


@pytest.mark.slow
def test_the_services_head_listens_on_127_0_0_1_only(ray_head, platform_home):
    record = read_state(platform_home).services["ray"]
    # `up` returns once the dashboard, the node and the job API answer; the client server may
    # still be binding: wait until every recorded port listens (the sockets checked are the head's).
    deadline = time.monotonic() + 120
    while True:
        pids = local_services.service_pids(record)
        sockets = listening_sockets(pids)
        ports = {port for socks in sockets.values() for _, port in socks}
        if set(record.ports.values()) <= ports or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(record.ports.values()) <= ports, (record.ports, ports)
    assert len(pids) >= 5  # ray start, GCS, raylet, dashboard, agents...
    assert_loopback_only(sockets)
    assert len(ports) >= 8  # GCS, raylet, object manager, dashboard + agent, client server, runtime env agent, metrics


@pytest.fixture
def other_head(tmp_path_factory, monkeypatch):
    """Another user's head: `ray start --head` with its own temp dir, which is also this
    process's default Ray temp dir (RAY_TMPDIR), so Ray's discovery file names it."""
    root = Path(tempfile.mkdtemp(prefix="cvoth-", dir="/tmp"))  # short: Ray's socket paths
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    temp_dir = root / "ray"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CONTAVSEP_HOME")}
    env["RAY_AUTH_MODE"] = "disabled"
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--port",
        str(port),
        "--num-cpus",
        "1",
        "--include-dashboard",
        "false",
        "--disable-usage-stats",
        "--temp-dir",
        str(temp_dir),
    ]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from ray._private.utils import read_ray_address

        deadline = time.monotonic() + 300
        while read_ray_address(str(temp_dir)) is None:  # written once the head is up
            assert head.poll() is None and time.monotonic() < deadline, "the other Ray head did not start"
            time.sleep(0.5)
        yield read_ray_address(str(temp_dir)), head.pid
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            members = local_services._session_members(head.pid)
            for pid in members:
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while local_services._session_members(head.pid) and time.monotonic() < deadline:
                time.sleep(0.3)
        head.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_sweep_without_a_cluster_runs_on_a_private_ray_not_on_another_head(
    other_head, tmp_path, synth_dataset_factory, monkeypatch
):
    other_address, other_session = other_head
    import ray
    from ray._private.services import get_ray_address_from_environment
    from ray._raylet import GcsClient

    from contavsep_platform.sweep import connect_ray, run_sweep

    # The trap is set: an address-less ray.init() of the old code would join the other head.
    assert get_ray_address_from_environment(None, None) == other_address
    if ray.is_initialized():
        ray.shutdown()  # the session's local Ray (other tests re-initialise it)
    monkeypatch.setenv("CONTAVSEP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    storage_uri = f"file://{tmp_path}/storage"
    space = parse_space(
        f'name: private\nbase: {{preset: tiny, data.uri: "{data}", data.num_steps: 2, data.classes_per_step: 2,'
        " train.iters_per_step: 1, train.batch_size: 4, eval.windows_per_clip: 1, eval.pairs_per_clip: 1, eval.examples: 0}\n"
        "strategies:\n  finetune: {}\nnum_samples: 1\nscheduler: {type: fifo}\n"
        "resources: {workers: 1, cpus: 0.9, driver_cpus: 0.1}\n",
        storage_uri=storage_uri,
    )
    started = connect_ray(None, {"CONTAVSEP_HOME": str(tmp_path / "home")})
    try:
        assert started
        ours = ray.get_runtime_context().gcs_address
        assert ours != other_address
        # The private instance is closed too: every process it started listens on 127.0.0.1.
        mine = [pid for pid in descendants(os.getpid()) if pid not in local_services._session_members(other_session)]
        assert_loopback_only(listening_sockets(mine))
        outcome = run_sweep(space, storage_uri=storage_uri, name="private", verbose=0)
    finally:
        ray.shutdown()
    assert [r.status for r in outcome.trials] == ["complete"]
    jobs = GcsClient(address=other_address).get_all_job_info()
    assert not jobs, jobs  # no driver of ours ever joined it


@pytest.mark.server
def test_a_head_under_a_long_home_leaves_no_discovery_file_and_a_plain_ray_init_starts_its_own(tmp_path, monkeypatch):
    # Ray's "machine-wide" temp dir is this test's own (RAY_TMPDIR), so the file a plain ray.init()
    # follows is the one this test watches, whatever else runs on the machine.
    from contavsep_platform.services.ray_discovery import shared_discovery_file
    from contavsep_platform.settings import private_ray_temp_dir

    machine = Path(tempfile.mkdtemp(prefix="cvm-", dir="/tmp"))  # short: Ray's socket paths live under it
    monkeypatch.setenv("RAY_TMPDIR", str(machine))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    home = tmp_path / "a-home-path-too-long-for-ray-sockets"
    assert len(str(home / "ray")) > 40  # <home>/ray would not fit Ray's socket paths
    shared = shared_discovery_file()
    assert shared.parent.parent == machine
    head_temp = Path(private_ray_temp_dir(home))
    assert not str(head_temp).startswith(str(machine)) and head_temp.parent.name.startswith("cvray-")
    try:
        local_services.up(
            home, ports={role: free_port() for role in local_services.DEFAULT_PORTS}, ray=True, num_cpus=1
        )
        address = read_state(home).services["ray"].address
        assert address and not shared.exists()  # the head wrote its discovery file into its own temp dir
        assert (head_temp / "ray_current_cluster").read_text().strip() == address
        assert oct(head_temp.parent.stat().st_mode & 0o777) == "0o700"  # Ray opens its own temp dir to all
        # a head started by an older version wrote the shared file: down removes it where it names this head
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.write_text(address)
    finally:
        local_services.down(home)
    assert not shared.exists()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    plain = "import ray; ray.init(num_cpus=1, include_dashboard=False); print(ray.cluster_resources()['CPU']); ray.shutdown()"
    try:
        out = subprocess.run([sys.executable, "-c", plain], env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(machine, ignore_errors=True)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "1.0", out.stderr[-2000:]


def test_down_removes_ray_s_shared_discovery_file_only_where_it_names_the_stopped_head(tmp_path, monkeypatch):
    from contavsep_platform.services.ray_discovery import forget_head, shared_discovery_file

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    shared = shared_discovery_file()
    shared.parent.mkdir(parents=True)
    shared.write_text("127.0.0.1:6390\n")
    assert not forget_head("127.0.0.1:6379") and shared.read_text() == "127.0.0.1:6390\n"  # another head's
    assert forget_head("127.0.0.1:6390") and not shared.exists()
    assert not forget_head("127.0.0.1:6390")  # nothing left to remove
