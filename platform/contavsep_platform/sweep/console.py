"""A sweep's console: Ray's and Tune's output to the sweep's log file unless verbose, and this
session's console on a restored Tuner."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from contavsep_platform.live_table import LiveTable
from contavsep_platform.sweep.cluster_watch import ClusterWatch
from contavsep_platform.sweep_log import noise_to_log, sweep_log_path


@contextmanager
def _console(name: str, verbose: int) -> Iterator[Any]:
    """Quiet (``verbose == 0``): Ray's and Tune's output to the sweep's log file for the block,
    which gets the console stream; verbose: everything stays on the console (``None``)."""
    if verbose:
        yield None
        return
    path = sweep_log_path(name)
    print(f"sweep {name}: Ray's and Tune's output go to {path} (--verbose shows them here)", flush=True)
    with noise_to_log(path) as console:
        yield console


def _use_console(tuner: Any, verbose: int, callbacks: Sequence[Any]) -> None:
    """A restored Tuner runs with the RunConfig pickled with the sweep: this session's console
    (verbosity, and a live table in place of the silent copy read back) replaces that one's."""
    run_config = tuner._local_tuner.get_run_config()  # private in Ray 2.60; Tuner.restore takes no RunConfig
    run_config.verbose = verbose
    # this session's own: the console and the cluster watch (the pickled ones hold no state)
    fresh = (LiveTable, ClusterWatch)
    mine = [cb for cb in callbacks if isinstance(cb, fresh)]
    run_config.callbacks = [*mine, *(cb for cb in run_config.callbacks or [] if not isinstance(cb, fresh))]
