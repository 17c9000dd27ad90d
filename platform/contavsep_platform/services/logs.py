"""The services' log files, ``<state_dir>/logs/<service>.log``: every start appends to its file
after a marker line (:data:`LOG_MARKER`), so the file keeps every start and the latest one can be
read on its own."""

from __future__ import annotations

from pathlib import Path

LOG_MARKER = "=== contavsep services: starting "


def log_tail(path: str, lines: int = 1) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    tail = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(empty log)"


def last_run_log(path: Path) -> str:
    """The log of the latest start only (the file keeps every start, each after a marker line)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text.rsplit(LOG_MARKER, 1)[-1]
