"""The processes of a recorded service: identity by /proc, never by name.

A service's leader counts as ours only while ``/proc/<pid>/cmdline`` matches its recorded argv;
the rest of its tree is found by session id (every service starts in a new session), and
:func:`stop_record` signals exactly those processes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from contavsep_platform.services.errors import ServiceError
from contavsep_platform.settings import ServiceRecord


def _proc_cmdline(pid: int) -> tuple[str, ...] | None:
    """argv of a live process; ``None`` if it does not exist or is a zombie (empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))


def _proc_sid_state(pid: int) -> tuple[int, str] | None:
    """(session id, state letter) of a process from ``/proc/<pid>/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[3]), fields[0]  # state, ppid, pgrp, session, ...


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` that this user may signal."""
    me = os.getuid()
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        info = _proc_sid_state(pid)
        if info is None or info[0] != sid or info[1] in ("Z", "X"):
            continue
        try:
            if entry.stat().st_uid != me:
                continue
        except FileNotFoundError:
            continue
        members.append(pid)
    return members


def is_alive(record: ServiceRecord) -> bool:
    """Whether the recorded leader process still runs with the recorded argv."""
    return _proc_cmdline(record.pid) == record.cmdline


def reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own child (tests start and stop in one process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def service_pids(record: ServiceRecord) -> list[int]:
    """Processes that belong to a recorded service: its leader (only if the argv matches) and
    the members of its session. A pid cannot be reused while it still names a live session, so
    when the leader is gone, the processes left with ``sid == pid`` are the orphans of ours; when
    a process with that pid runs another argv, the pid was reused and nothing is ours."""
    reap(record.pid)
    leader = _proc_cmdline(record.pid)
    if leader is not None and leader != record.cmdline:
        return []
    return sorted(set(_session_members(record.pid)) | ({record.pid} if leader is not None else set()))


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_record(record: ServiceRecord, grace_s: float) -> int:
    """Stop one recorded service's process tree: SIGTERM, then SIGKILL after ``grace_s``
    (its :attr:`~contavsep_platform.services.specs.Service.stop_grace_s` at ``down``).

    Returns how many processes were signalled. Raises :class:`ServiceError` if some survive.
    """
    targets = service_pids(record)
    if not targets:
        return 0
    _signal_all(targets, signal.SIGTERM)
    for sig, wait_s in ((signal.SIGKILL, grace_s), (None, 10.0)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            left = service_pids(record)
            if not left:
                return len(targets)
            time.sleep(0.2)
        if sig is not None:
            _signal_all(service_pids(record), sig)
    left = service_pids(record)
    if left:
        raise ServiceError(
            f"{record.name}: processes {left} did not exit after SIGKILL; "
            f"check them with `ps -o pid,args -s {record.pid}`"
        )
    return len(targets)
