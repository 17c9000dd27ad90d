"""Platform test fixtures: the real local services, started the way users start them.

- ``platform_home`` (session): a temp ``CONTAVSEP_HOME`` set in ``os.environ`` for the session,
  with the explicit endpoint variables (``MLFLOW_TRACKING_URI``, ``RAY_ADDRESS``,
  ``CONTAVSEP_STORAGE``, ``CONTAVSEP_S3_*``, ``AWS_*`` endpoint/keys) removed, so every command,
  subprocess and Ray worker of the session resolves to this session's services; restored at the end.
- ``services`` (session): S3 (rclone) + MLflow through :func:`contavsep_platform.services.up` on
  free ports; yields the resolved :class:`~contavsep_platform.settings.Endpoints`
  (``service_env(endpoints)`` gives a subprocess the same view); ``down`` at the end.
- ``ray_local``: an in-process private local Ray (``ray.init(address="local", num_cpus=2, ...)``),
  one per session, re-initialised if a test shut it down (e.g. to use
  ``ray.cluster_utils.Cluster``); its workers inherit ``CONTAVSEP_HOME``, so they find
  ``services`` through the state file. Shut down at the end.
- ``ray_head`` (session): a real ``ray start --head`` with dashboard and job API (for
  ``ray job submit``), started by ``services.up(ray=True)`` with the services' env, on free ports;
  yields the resolved Endpoints (``ray_dashboard_url``, ``ray_address``); stopped at the end.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contavsep_platform import services as local_services
from contavsep_platform.settings import Endpoints, resolve_endpoints

_ENDPOINT_ENV = (
    "MLFLOW_TRACKING_URI",
    "RAY_ADDRESS",
    "CONTAVSEP_STORAGE",
    "CONTAVSEP_S3_ENDPOINT",
    "CONTAVSEP_S3_ACCESS_KEY",
    "CONTAVSEP_S3_SECRET_KEY",
    "CONTAVSEP_S3_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def wait_until(predicate, timeout_s: float, what: str, pause: float = 2.0):
    """``predicate()``'s first truthy value, polled every ``pause`` s; fails the test after
    ``timeout_s`` naming ``what`` (for conditions of real processes, never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def free_port() -> int:
    """A TCP port free right now on all interfaces (the services check the same way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def free_ports(roles: tuple[str, ...] | list[str]) -> dict[str, int]:
    """One distinct free port per role (all held open while choosing: `up` refuses a port twice)."""
    socks = []
    try:
        for _ in roles:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("0.0.0.0", 0))
            socks.append(sock)
        return {role: int(sock.getsockname()[1]) for role, sock in zip(roles, socks)}
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(scope="session")
def platform_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This session's ``CONTAVSEP_HOME`` (the services' state, keys, data and logs)."""
    home = tmp_path_factory.mktemp("contavsep-home")
    with pytest.MonkeyPatch.context() as mp:
        for name in _ENDPOINT_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("CONTAVSEP_HOME", str(home))
        mp.setenv("RAY_TRAIN_V2_ENABLED", "1")  # the trials' Train V2 pattern, also for ray_local's workers
        yield home


@pytest.fixture(scope="session")
def services(platform_home: Path) -> Iterator[Endpoints]:
    """Real S3 + MLflow servers for the session (free ports, temp state folder)."""
    ports = free_ports(["s3", "mlflow"])
    try:
        local_services.up(platform_home, ports=ports)
        yield resolve_endpoints()
    finally:
        local_services.down(platform_home)


@pytest.fixture(scope="session")
def _ray_local_session(platform_home: Path) -> Iterator[None]:
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_local(_ray_local_session: None) -> Iterator[object]:
    """A local in-process Ray with 2 CPUs (no dashboard); yields the ``ray`` module."""
    import ray

    if not ray.is_initialized():
        # address="local": a new private instance, never a head some discovery file names
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2, log_to_driver=False
        )
    yield ray


@pytest.fixture(scope="session")
def ray_head(services: Endpoints, platform_home: Path) -> Iterator[Endpoints]:
    """A real local Ray head (``ray start --head --block``) with the services' env, on free ports."""
    ports = free_ports(local_services.SERVICE_PORTS["ray"])
    # A short temp dir: Ray's socket paths under it must stay below the 107-byte AF_UNIX limit.
    temp_dir = tempfile.mkdtemp(prefix="cvray-", dir="/tmp")
    try:
        local_services.up(platform_home, ports=ports, ray=True, num_cpus=2, ray_temp_dir=temp_dir)
        yield resolve_endpoints()
    finally:
        local_services.down(platform_home, names=["ray"])
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_dataset(services):
    """A small synthetic dataset on the services' S3 storage (4 classes, tiny clips)."""
    from contavsep import storage
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic

    uri = storage.join(services.storage_uri, "datasets", "synth-sweep-test")
    storage.ensure_bucket(services.storage_uri, services.s3)
    if not storage.exists(storage.join(uri, "manifest.json"), services.s3):
        build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(4, 1, 2), seconds=1.6), settings=services.s3)
    return uri
