"""An autoscaling Ray cluster on one machine: Ray's fake multi-node provider, shaped like the
shipped launcher file (``cluster/aws-gpu.yaml``).

The real autoscaler (the head's monitor process) launches local raylets as worker "nodes" with
logical GPUs when trials wait for them and removes them after ``idle_timeout_minutes``, exactly
as it would launch and terminate cloud instances. Ray's own ``AutoscalingCluster`` cannot be used
from the wheel: it reads an example file the wheel does not ship and runs ``ray stop --force``,
which kills every Ray process of the user. This head runs under its own temp dir and ports, and
:meth:`FakeCluster.stop` stops only the processes of that temp dir.

What is taken from the launcher file (so what is tested is what users launch): the head's node
type and resources (no CPU for training; ``contavsep_driver`` for the trial drivers), and the
preferred GPU worker type (the highest ``priority``: the spot one), with ``min_workers: 0``. What
is scaled down to one machine: the workers' CPUs (1 per node), their count (``max_workers: 4``),
the idle timeout (seconds instead of minutes) and the provider (``fake_multinode``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCHER_FILE = REPO / "cluster" / "aws-gpu.yaml"
WORKER_CPUS = 1  # per fake node: the machine has 2 cores
# Two nodes at work at once (the spaces say max_concurrent: 2), two more for replacements: the fake
# provider never terminates a node that died under it (a cloud's lost instance is just gone), so a
# killed node keeps counting against max_workers.
WORKER_MAX = 4


def preferred_gpu_type(launcher: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The launcher file's one-GPU worker type the autoscaler tries first (highest priority)."""
    types = launcher["available_node_types"]
    gpu = {name: spec for name, spec in types.items() if spec.get("resources", {}).get("GPU") == 1}
    name = max(gpu, key=lambda n: gpu[n].get("priority", 0))
    return name, gpu[name]


def fake_config(gcs_address: str, idle_timeout_s: float, launcher_file: Path = LAUNCHER_FILE) -> dict[str, Any]:
    """The autoscaling config of a fake cluster: the launcher file's head and preferred GPU worker
    type, scaled to this machine (see the module docstring)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID, FAKE_HEAD_NODE_TYPE

    launcher = yaml.safe_load(launcher_file.read_text())
    head_type = launcher["head_node_type"]
    gpu_type, gpu_spec = preferred_gpu_type(launcher)
    return {
        "cluster_name": "contavsep-fake",
        "max_workers": WORKER_MAX,
        "upscaling_speed": launcher.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_s / 60.0,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,  # the fake nodes would join 6379 otherwise
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "head_node_id": FAKE_HEAD_NODE_ID,
        },
        "available_node_types": {
            # the provider names its head's type so; another name, and the autoscaler launches
            # nodes of the head's type for a head it does not see
            FAKE_HEAD_NODE_TYPE: {
                "resources": dict(launcher["available_node_types"][head_type]["resources"]),
                "node_config": {},
                "max_workers": 0,
            },
            gpu_type: {
                "resources": {"CPU": WORKER_CPUS, "GPU": 1, "object_store_memory": 200 * 1024**2},
                "node_config": {},
                "min_workers": gpu_spec.get("min_workers", 0),
                "max_workers": WORKER_MAX,
            },
        },
        "head_node_type": FAKE_HEAD_NODE_TYPE,
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


@dataclass
class FakeCluster:
    """A running fake autoscaling cluster (its head process and everything under its temp dir)."""

    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    head: subprocess.Popen
    log: Path
    worker_type: str
    history: list[tuple[float, int]] = field(default_factory=list)

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes as Ray's state API lists them (alive and dead)."""
        with urllib.request.urlopen(f"{self.dashboard_url}/api/v0/nodes?limit=100&detail=true", timeout=30) as reply:
            doc = json.loads(reply.read())
        return list(doc["data"]["result"]["result"])

    def alive_workers(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes() if n["state"] == "ALIVE" and not n.get("is_head_node")]

    def kill_node(self, node_id: str, missing_ok: bool = False) -> int:
        """What a lost machine looks like to Ray: SIGKILL the raylet of node ``node_id`` and the
        agents started for it (its workers die with their raylet); returns how many were killed.
        ``missing_ok``: the node may have shut itself down already (after a drain)."""
        marks = (f"--node_id={node_id}", f"--node-id={node_id}")
        raylets = {pid for pid in _processes_under(str(self.temp_dir)) if any(m in _cmdline(pid) for m in marks)}
        assert raylets or missing_ok, f"no process of node {node_id} found"
        for pid in raylets:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(raylets)

    def drain_as_preempted(self, node_id: str, deadline_s: float = 1.0) -> None:
        """Tell Ray the node goes away for a preemption, what a cloud's spot notice turns into
        (``ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION``, called in-process: the CLI
        takes seconds to start); the caller then kills the node."""
        import ray._raylet
        from ray.core.generated import autoscaler_pb2

        deadline_ms = int(time.time() * 1000 + deadline_s * 1000)
        accepted, why = ray._raylet.GcsClient(address=self.gcs_address).drain_node(
            node_id,
            autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
            "spot instance preempted (test)",
            deadline_ms,
        )
        assert accepted, f"the drain of node {node_id} was refused: {why}"

    def stop(self) -> None:
        """Stop the head and every process running under this cluster's temp dir (its fake nodes,
        their workers); nothing else on the machine."""
        pids = _processes_under(str(self.temp_dir))
        if self.head.poll() is None:
            pids.add(self.head.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in list(pids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pids.discard(pid)
            deadline = time.monotonic() + 10
            while pids and time.monotonic() < deadline:
                pids = {p for p in pids if _alive(p)}
                time.sleep(0.2)
        if self.head.poll() is None:
            self.head.wait(timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for every purpose but its table entry
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _processes_under(temp_dir: str) -> set[int]:
    """Processes of this cluster: their command line names ``temp_dir`` (Ray passes most of its
    processes the session dir) or they hold a file under it open (the agents rename their process
    title, which overwrites their command line, but keep their logs there open)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if temp_dir in cmdline:
                found.add(int(entry.name))
                continue
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd).startswith(temp_dir):
                    found.add(int(entry.name))
                    break
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def start_fake_cluster(
    temp_dir: Path, ports: Mapping[str, int], env: Mapping[str, str], idle_timeout_s: float = 6.0
) -> FakeCluster:
    """``ray start --head --autoscaling-config`` of :func:`fake_config` (``RAY_FAKE_CLUSTER=1``),
    with ``env`` (the services' endpoints, no keys), under ``temp_dir`` on ``ports`` (``ray``,
    ``dashboard``, ``ray_client``, ``dashboard_agent``); returns once ``ray start`` is done."""
    from ray._common.utils import get_ray_address_file
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    from contavsep_platform.sweep.ray_cluster import AUTOSCALING_CONFIG_ENV

    temp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    gcs_address = f"127.0.0.1:{ports['ray']}"
    launcher = yaml.safe_load(LAUNCHER_FILE.read_text())
    head_resources = dict(launcher["available_node_types"][launcher["head_node_type"]]["resources"])
    config_path = temp_dir / "autoscaling.json"
    config = fake_config(gcs_address, idle_timeout_s)
    config_path.write_text(json.dumps(config))
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(ports["ray"]),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
        "--ray-client-server-port", str(ports["ray_client"]),
        "--dashboard-agent-listen-port", str(ports["dashboard_agent"]),
        "--num-cpus", str(head_resources.pop("CPU", 0)),
        "--resources", json.dumps(head_resources),
        "--temp-dir", str(temp_dir),
        "--autoscaling-config", str(config_path),
        "--disable-usage-stats",
    ]  # fmt: skip
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray's single-machine mode, so every process (the fake
    # nodes too) stays on 127.0.0.1 instead of the machine's network address (as `services up`).
    full_env = {
        **env,
        "RAY_FAKE_CLUSTER": "1",
        # the sweep reads the node types the autoscaler may add from its config file (as from
        # ~/ray_bootstrap_config.yaml on a `ray up` head)
        AUTOSCALING_CONFIG_ENV: str(config_path),
        # the head is the provider's head node (else the autoscaler launches "head" nodes for it)
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
        "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # as `services up --ray`: no token auth on a head that listens on 127.0.0.1 only (Ray turns
        # it on when ~/.ray/auth_token exists, which `ray job submit` would not send)
        "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE", "disabled"),
    }
    log = temp_dir / "head.log"
    with log.open("ab") as out:
        head = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = FakeCluster(
        gcs_address, f"http://127.0.0.1:{ports['dashboard']}", temp_dir, head, log, preferred_gpu_type(launcher)[0]
    )
    address_file = Path(get_ray_address_file(str(temp_dir)))
    deadline = time.monotonic() + 300
    while not (address_file.exists() and address_file.read_text().strip() == gcs_address):
        if head.poll() is not None or time.monotonic() > deadline:
            cluster.stop()
            raise RuntimeError(f"the fake cluster's head did not start; its log:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return cluster
