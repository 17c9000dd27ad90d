"""The ordered outbox every MLflow call goes through (sent in order, kept while the server is
unreachable, dropped when it refuses) and the spool of local files waiting to be uploaded.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contavsep_platform.tracking.errors import _one_line, is_transient
from contavsep_platform.tracking.http_limits import short_http_requests

log = logging.getLogger("contavsep_platform.tracking")


@dataclass
class _Op:
    """One MLflow call to make, in order. ``call`` must be safe to repeat (it is retried whole)."""

    label: str
    call: Callable[[], object]  # what it returns is not used
    cleanup: Callable[[], None] | None = None  # runs once the op is done with (sent or dropped)


class _Outbox:
    """Sends queued MLflow calls in order; stops at the first failure that a retry may fix.

    Thread-safe: a trial's system-metrics thread queues and flushes next to the trial's own calls.
    """

    def __init__(self, tracking_uri: str, http_timeout_s: int, max_retries: int):
        self.tracking_uri = tracking_uri
        self.http_timeout_s = http_timeout_s
        self.max_retries = max_retries
        self.pending: deque[_Op] = deque()
        self.down_since: float | None = None
        self.dropped: list[str] = []
        self._lock = threading.RLock()

    def add(self, op: _Op) -> None:
        with self._lock:
            self.pending.append(op)

    def flush(self) -> bool:
        """Send what is queued; True when nothing is left."""
        with self._lock:
            return self._flush()

    def _flush(self) -> bool:
        sent = 0
        while self.pending:
            op = self.pending[0]
            try:
                with short_http_requests(self.http_timeout_s, self.max_retries):
                    op.call()
                sent += 1
            except Exception as exc:  # noqa: BLE001 - a tracking problem must never end a trial
                if is_transient(exc):
                    if self.down_since is None:
                        self.down_since = time.monotonic()
                        log.warning(
                            "MLflow at %s is unreachable (%s); keeping %d item(s) to send later",
                            self.tracking_uri,
                            _one_line(exc),
                            len(self.pending),
                        )
                    else:
                        log.debug("MLflow at %s still unreachable: %s", self.tracking_uri, _one_line(exc))
                    return False
                log.warning("MLflow at %s refused %s, dropped: %s", self.tracking_uri, op.label, _one_line(exc))
                self.dropped.append(op.label)
            self.pending.popleft()
            if op.cleanup is not None:
                op.cleanup()
        if self.down_since is not None:
            log.warning(
                "MLflow at %s is reachable again after %.0f s; sent %d buffered item(s)",
                self.tracking_uri,
                time.monotonic() - self.down_since,
                sent,
            )
            self.down_since = None
        return True

    def drain(self, timeout_s: float) -> bool:
        """Flush, retrying for up to ``timeout_s`` while the server is unreachable."""
        deadline = time.monotonic() + timeout_s
        pause = 0.5
        while not self.flush():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 5.0)
        return True


class _Spool:
    """Local files waiting to be uploaded as artifacts (they must outlive an outage)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.root: Path | None = None
        self._count = 0

    def new_dir(self) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix=self.prefix))
        self._count += 1
        path = self.root / f"{self._count:04d}"
        path.mkdir()
        return path

    def remove_if_empty(self) -> None:
        if self.root is not None and self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()
            self.root = None
