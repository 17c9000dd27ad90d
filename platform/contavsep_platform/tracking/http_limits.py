"""Short MLflow HTTP timeouts and retries while a tracker talks to the server (process-wide, scoped)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_env_lock = threading.Lock()
_env_users = 0
_env_set: dict[str, str] = {}


class _NoRetryLines(logging.Filter):
    """Drops urllib3's "Retrying (Retry(total=...)) after connection broken" warnings: during an
    outage every request would add one; the outbox says once that the server is unreachable."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


_no_retry_lines = _NoRetryLines()


@contextmanager
def short_http_requests(timeout_s: int, max_retries: int) -> Iterator[None]:
    """Short MLflow HTTP timeouts/retries (and no URL printing or progress bars) while a tracker talks to the server.

    The MlflowClient reads these from the environment at every request and has no per-client
    setting. They are set only where the user has not set them, and only while at least one
    tracker call is in flight (reference-counted, so threads do not undo each other's).
    """
    global _env_users
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout_s)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(int(max_retries)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        # MlflowClient.set_terminated prints two "View run" lines to stdout (after one more
        # request): they would land in the middle of the sweep's tables. ui_url() gives the link.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        # Artifact downloads (the report reads search_space.yaml) draw a tqdm bar on stderr,
        # which would break a command's one-line error.
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    with _env_lock:
        if _env_users == 0:
            for key, value in wanted.items():
                if key not in os.environ:
                    os.environ[key] = value
                    _env_set[key] = value
            logging.getLogger("urllib3.connectionpool").addFilter(_no_retry_lines)
        _env_users += 1
    try:
        yield
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                for key, value in _env_set.items():
                    if os.environ.get(key) == value:
                        del os.environ[key]
                _env_set.clear()
                logging.getLogger("urllib3.connectionpool").removeFilter(_no_retry_lines)
