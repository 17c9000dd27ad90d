"""The cluster's nodes while a sweep runs: what an autoscaling cluster did, and when.

On an autoscaling cluster the worker nodes come when trials wait for them and go once idle, and
a spot node can vanish mid-trial. :class:`ClusterWatch` (a Tune callback, so it runs in the
sweep's own loop without a thread) samples Ray's node table every few seconds, logs each change
in the node count to the sweep's log ("cluster: 2 worker node(s) alive, 2 GPU(s) [+1]"), and
keeps the series, which the sweep logs to its parent MLflow run (``cluster/worker_nodes``,
``cluster/gpus``; the x axis is seconds since the sweep started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune import Callback

from contavsep_platform.cluster_nodes import NodeCount, count_nodes

log = logging.getLogger("contavsep.sweep")


class ClusterWatch(Callback):
    """Samples the node table every ``interval_s`` from Tune's loop; see the module docstring."""

    def __init__(self, interval_s: float = 2.0, started: float | None = None) -> None:
        self.interval_s = interval_s
        self.started = time.monotonic() if started is None else started
        self.history: list[NodeCount] = []
        self._next = 0.0

    def sample(self, nodes: Sequence[Mapping[str, Any]] | None = None) -> NodeCount | None:
        """Take one sample now (``nodes``: ``ray.nodes()`` unless given); returns it when the
        count changed (then it is logged and kept), else None."""
        if nodes is None:
            import ray

            nodes = ray.nodes()
        workers, gpus = count_nodes(nodes)
        last = self.history[-1] if self.history else None
        if last is not None and (last.workers, last.gpus) == (workers, gpus):
            return None
        point = NodeCount(round(time.monotonic() - self.started, 1), workers, gpus, int(time.time() * 1000))
        self.history.append(point)
        change = "" if last is None else f" [{workers - last.workers:+d}]"
        log.info("cluster: %d worker node(s) alive, %g GPU(s)%s", workers, gpus, change)
        return point

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        try:
            self.sample()
        except Exception as exc:  # noqa: BLE001 - a watch must never stop the sweep (GCS busy, Ray shutting down)
            log.debug("cluster watch: no sample (%s)", exc)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        try:
            self.sample()
        except Exception as exc:  # noqa: BLE001 - as above
            log.debug("cluster watch: no last sample (%s)", exc)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the sweep's state: a resumed sweep starts a new series
        # (and a fresh watch replaces this one, see sweep.console._use_console).
        return {"interval_s": self.interval_s, "started": 0.0, "history": [], "_next": 0.0}
