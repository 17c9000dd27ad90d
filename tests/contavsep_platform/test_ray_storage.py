"""The storage filesystem of Tune and Train (:mod:`contavsep_platform.ray_storage`) against a
real ``rclone serve s3`` of this test: pickled without keys, re-opened with the keys of the
unpickling process, uploads retried through an outage (the server stopped and restarted)."""

from __future__ import annotations

import json
import logging
import os
import pickle
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from contavsep import storage
from contavsep_platform.ray_storage import S3Storage, ray_storage
from contavsep_platform.services import rclone_binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rclone:
    """One ``rclone serve s3`` over a temp folder, stoppable and restartable on its port."""

    def __init__(self, root: Path):
        self.root = root
        (root / "data" / "bucket").mkdir(parents=True)
        self.access, self.secret = "test-" + secrets.token_hex(6), secrets.token_hex(20)
        self.keys_file = root / "keys.json"
        self.keys_file.write_text(json.dumps({"access_key": self.access, "secret_key": self.secret}))
        self.keys_file.chmod(0o600)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            str(rclone_binary()),
            "serve",
            "s3",
            str(self.root / "data"),
            "--addr",
            f"127.0.0.1:{self.port}",
            "--config",
            "/dev/null",
        ]
        env = {**os.environ, "RCLONE_AUTH_KEY": f'"{self.access},{self.secret}"'}
        self.process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        settings = self.settings()
        deadline = time.monotonic() + 60
        while True:  # until it answers (a restart may wait for the port to be released)
            try:
                storage.list_dir("s3://bucket", settings)
                return
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def settings(self) -> storage.S3Settings:
        return storage.S3Settings(endpoint_url=self.endpoint, access_key=self.access, secret_key=self.secret)


@pytest.fixture
def rclone(tmp_path: Path) -> Iterator[Rclone]:
    server = Rclone(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_filesystem_pickles_without_keys_and_finds_them_where_it_is_unpickled(rclone, monkeypatch, tmp_path):
    path, fs = ray_storage("s3://bucket/sweeps", rclone.settings())
    assert path == "bucket/sweeps"
    with fs.open_output_stream("bucket/sweeps/a/state.json") as out:  # create_dir-free: no marker objects
        out.write(b"{}")
    fs.create_dir("bucket/sweeps/empty")  # a no-op: rclone refuses directory markers
    blob = pickle.dumps(fs)
    assert rclone.secret.encode() not in blob and rclone.access.encode() not in blob
    assert rclone.endpoint.encode() in blob

    # The unpickling process (a Ray worker) is told where the keys are, not the keys.
    home = tmp_path / "worker-home"
    home.mkdir()
    monkeypatch.setenv("CONTAVSEP_HOME", str(home))
    for name in ("CONTAVSEP_S3_ACCESS_KEY", "CONTAVSEP_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONTAVSEP_S3_ENDPOINT", rclone.endpoint)
    monkeypatch.setenv("CONTAVSEP_S3_KEYS_FILE", str(rclone.keys_file))
    again = pickle.loads(blob)
    assert isinstance(again.handler, S3Storage) and again.handler.settings.secret_key == rclone.secret
    assert again.open_input_stream("bucket/sweeps/a/state.json").read() == b"{}"
    assert sorted(i.path for i in again.get_file_info(pafs.FileSelector("bucket/sweeps", recursive=True))) == [
        "bucket/sweeps/a",
        "bucket/sweeps/a/state.json",
    ]


class _Outage(logging.Handler):
    """Counts the storage's warnings; ``seen`` is set at the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.seen.set()


def _in_thread(call) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # reported by the caller's assertion
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failures


def test_storage_calls_retry_through_a_storage_outage_with_one_log_line(rclone):
    """The server stops; Tune's listing of the sweep waits for it (one log line, not one per
    retry) and answers once it is back."""
    _, fs = ray_storage("s3://bucket/sweeps", rclone.settings())
    storage.write_bytes_atomic("s3://bucket/sweeps/s1/state.json", b"{}", rclone.settings())
    outage = _Outage()
    logger = logging.getLogger("contavsep.storage")
    logger.addHandler(outage)
    try:
        rclone.stop()
        infos: list = []
        lister, failures = _in_thread(
            lambda: infos.extend(fs.get_file_info(pafs.FileSelector("bucket/sweeps", recursive=True)))
        )
        assert outage.seen.wait(timeout=120), "the listing never reported the outage"
        assert lister.is_alive()  # still retrying, not failed
        rclone.start()
        lister.join(timeout=240)
        assert not lister.is_alive() and not failures, failures
    finally:
        logger.removeHandler(outage)
    assert "bucket/sweeps/s1/state.json" in [i.path for i in infos]
    assert len(outage.lines) == 1, outage.lines
    assert rclone.endpoint in outage.lines[0] and rclone.secret not in outage.lines[0]


def test_checkpoint_uploads_retry_through_a_storage_outage(rclone, tmp_path):
    """Train uploads a checkpoint folder (copy_files on pyarrow's IO threads) while the server is
    down: a listener on its port drops every connection, and once the uploads have come back
    twice per file, the server returns; the checkpoint lands
    complete and copy_files returns without error."""
    checkpoint = tmp_path / "ckpt" / "step=0"
    checkpoint.mkdir(parents=True)
    payloads = {
        name: os.urandom(size) for name, size in (("state.pt", 3 * 1024**2), ("config.yaml", 100), ("results.json", 10))
    }
    for name, data in payloads.items():
        (checkpoint / name).write_bytes(data)
    _, fs = ray_storage("s3://bucket/sweeps", rclone.settings())
    fs.get_file_info("bucket/sweeps/t1")  # the client is built while the server is up
    rclone.stop()
    dropper = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    dropper.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dropper.bind(("127.0.0.1", rclone.port))
    dropper.listen(16)
    dropper.settimeout(120)
    uploader, failures = _in_thread(
        lambda: pafs.copy_files(str(checkpoint), "bucket/sweeps/t1/step=0", destination_filesystem=fs, use_threads=True)
    )
    try:
        for _ in range(2 * len(payloads)):
            connection, _ = dropper.accept()  # a request of the upload, refused by closing it
            connection.close()
    finally:
        dropper.close()
    assert uploader.is_alive() and not failures, failures  # still retrying
    rclone.start()
    uploader.join(timeout=300)
    assert not uploader.is_alive() and not failures, failures
    for name, data in payloads.items():
        assert storage.read_bytes(f"s3://bucket/sweeps/t1/step=0/{name}", rclone.settings()) == data


def test_a_folder_of_many_files_uploads_through_pyarrows_io_threads(rclone, tmp_path):
    """Tune syncs its experiment folder with copy_files on pyarrow's IO pool (8 threads): more
    files than threads must not deadlock the uploads closing on those threads."""
    import pyarrow

    folder = tmp_path / "experiment"
    folder.mkdir()
    count = 4 * pyarrow.io_thread_count()
    for i in range(count):
        (folder / f"f{i}.json").write_text(str(i))
    _, fs = ray_storage("s3://bucket/sweeps", rclone.settings())
    pafs.copy_files(str(folder), "bucket/sweeps/exp", destination_filesystem=fs, use_threads=True)
    assert len(storage.list_dir("s3://bucket/sweeps/exp", rclone.settings())) == count


def test_a_refusal_is_not_retried(rclone):
    wrong = storage.S3Settings(endpoint_url=rclone.endpoint, access_key=rclone.access, secret_key="wrong")
    _, fs = ray_storage("s3://bucket/sweeps", wrong)
    started = time.monotonic()
    with pytest.raises(OSError):
        fs.get_file_info("bucket/sweeps/x")
    assert time.monotonic() - started < 30
