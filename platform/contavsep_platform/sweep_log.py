"""The sweep's log file: where Ray's and Tune's own output goes while a sweep runs quietly.

A sweep's console is for the user: the live table, the final ranking, one-line errors and the
resume hint. What Ray and Tune print on their own (Tune's experiment box, its TensorBoard hint
and status tables, the raylet's "N PYTHON worker processes have been started" warnings, the
token-auth warning, worker output forwarded to the driver, Python warnings) is kept, in
``<state dir>/logs/sweep-<name>.log`` (appended to on ``--resume``).

All of it reaches the console from this process, two ways: through ``sys.stdout``/``sys.stderr``
looked up when written (Tune's reporter prints, and the driver prints the raylet's messages and
the workers' forwarded output as they arrive), and through logging handlers that hold the
stream they were created with (Ray's handler on the ``ray`` logger, created at ``import ray``,
keeps the ``sys.stderr`` of that moment). :func:`noise_to_log` points both at the log file for
the duration and hands back the real console. Ray's own processes (GCS, raylet, workers) write
to the session's log folder, whose path the log file names.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

# This project's loggers (contavsep.sweep, contavsep.trial, ...): their INFO lines belong in
# the log too (without a handler Python would drop them below WARNING).
PROJECT_LOGGER = "contavsep"


def sweep_log_path(name: str, state_dir: Path | None = None) -> Path:
    """``<state dir>/logs/sweep-<name>.log`` (the state dir: ``CONTAVSEP_HOME``, default ``~/.contavsep``)."""
    from contavsep_platform.settings import default_state_dir

    return (state_dir or default_state_dir()) / "logs" / f"sweep-{name}.log"


@contextmanager
def noise_to_log(path: Path) -> Iterator[TextIO]:
    """While the block runs, ``sys.stdout``, ``sys.stderr`` and the project's loggers write to
    the log file at ``path``; yields the console (the ``sys.stdout`` from before)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    console = sys.stdout
    # Line-buffered: a sweep killed hard still leaves what it printed up to its last line.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(fd, "a", buffering=1, encoding="utf-8", errors="replace") as log_file:
        print(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(sys.argv)}", file=log_file)
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        project = logging.getLogger(PROJECT_LOGGER)
        saved_level = project.level
        project.addHandler(handler)
        if project.getEffectiveLevel() > logging.INFO:
            project.setLevel(logging.INFO)
        saved_streams = sys.stdout, sys.stderr
        consoles = {id(s) for s in (*saved_streams, sys.__stdout__, sys.__stderr__) if s is not None}
        moved = []  # (handler, its stream)
        for h in _stream_handlers():
            if id(h.stream) in consoles:
                try:
                    moved.append((h, h.setStream(log_file)))
                except AttributeError:  # a stream looked up when written (logging._StderrHandler): sys.stderr does it
                    pass
        sys.stdout = sys.stderr = log_file
        try:
            yield console
        finally:
            sys.stdout, sys.stderr = saved_streams
            for h, stream in moved:
                h.setStream(stream)
            project.removeHandler(handler)
            project.setLevel(saved_level)


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every stream handler of the root logger and of the loggers created so far (not files)."""
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    found: dict[int, logging.StreamHandler] = {}
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                found[id(h)] = h
    return list(found.values())


class _Say(logging.Handler):
    """A logging handler that hands each record to ``say`` as one line."""

    def __init__(self, say: Callable[[str], None], level: int):
        super().__init__(level)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.say(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break the sweep
            self.handleError(record)


@contextmanager
def project_warnings_to(say: Callable[[str], None]) -> Iterator[None]:
    """The project's own warnings (an MLflow outage, a storage retry, a Ray start retried) stay
    on the console while the rest goes to the log: ``say`` gets each as one line."""
    project = logging.getLogger(PROJECT_LOGGER)
    handler = _Say(say, logging.WARNING)
    project.addHandler(handler)
    try:
        yield
    finally:
        project.removeHandler(handler)


def note_ray_logs(log_file: TextIO) -> None:
    """Name the folder of Ray's own process logs (GCS, raylet, workers) in the sweep's log."""
    try:
        import ray

        # Private in Ray 2.60; only a pointer. Ray declares `_global_node = None` and sets a Node when it starts.
        logs = ray._private.worker._global_node.get_logs_dir_path()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - attached to a cluster (no local node) or another Ray: nothing to name
        return
    print(f"Ray's process logs (GCS, raylet, workers): {logs}", file=log_file, flush=True)
