"""MLflow's own system metrics (``system/...``) for a run that is logged through a client, not ``mlflow.start_run``.

MLflow samples CPU, memory, disk and network with psutil, and NVIDIA GPU utilisation and memory
with pynvml where a GPU exists (AMD through pyrsmi), in :class:`SystemMetricsMonitor`; the run
page's "System metrics" tab charts them. That monitor is made for the fluent API: it asks the
server every sample whether the run still runs, logs with its own client and default HTTP
retries (minutes during an outage), and stops for good at the first failure. A trial logs
through the tracker's outbox instead (ordered, spooled while the server is away), so
:class:`RunSystemMetrics` keeps MLflow's monitors and metric names and hands each aggregated
sample to a callback, which queues it in that outbox.

Sampling interval and samples per logged point follow MLflow's environment variables
(``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``, ``MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING``)
when set, else the constructor's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psutil
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

log = logging.getLogger("contavsep_platform.system_metrics")


class RunSystemMetrics(SystemMetricsMonitor):
    """Samples this node's system metrics on a daemon thread; ``publish`` gets each point.

    Args:
        publish: called with ``{"system/<name>": value}`` once per logged point, from the
            sampling thread (and once from :meth:`stop`); it must not block for long.
        tracking_uri: the run's server (MLflow's monitor builds a client it never uses here).
        interval_s: seconds between samples.
        samples_before_logging: samples averaged into one logged point.
        node_id: inserted into the names (``system/<node>/...``) for multi-node runs; None for one node.
    """

    def __init__(
        self,
        publish: Callable[[dict[str, float]], None],
        tracking_uri: str,
        interval_s: float = 10.0,
        samples_before_logging: int = 1,
        node_id: str | None = None,
    ):
        super().__init__(
            run_id="",
            sampling_interval=interval_s,
            samples_before_logging=samples_before_logging,
            node_id=node_id,
            tracking_uri=tracking_uri,
        )
        self._publish = publish
        self._pending_samples = 0  # samples collected since the last published point

    def start(self) -> None:
        """Start sampling; the first point comes one interval from now."""
        # psutil's CPU share is measured from one call to the next: this call is the baseline,
        # so every sample is the mean over the interval before it (the first would read 0 otherwise).
        psutil.cpu_percent()
        super().start()

    def monitor(self) -> None:
        """The sampling loop: collect at the end of every interval, publish every ``samples_before_logging`` samples."""
        while not self._shutdown_event.wait(self.sampling_interval):
            self._sample()
            if self._pending_samples >= self.samples_before_logging:
                self._publish_now()

    def _sample(self) -> None:
        try:
            self.collect_metrics()
            self._pending_samples += 1
        except Exception as exc:  # noqa: BLE001 - a sensor that fails (e.g. NVML after a driver reset) must not end a trial
            log.warning("could not sample system metrics: %s", " ".join(str(exc).split())[:200])

    def _publish_now(self) -> None:
        if not self._pending_samples:
            return
        try:
            self.publish_metrics(self.aggregate_metrics())
        except Exception as exc:  # noqa: BLE001 - lost system metrics are not worth a failed trial
            log.warning("could not queue system metrics: %s", " ".join(str(exc).split())[:200])
        self._pending_samples = 0

    def publish_metrics(self, metrics: dict[str, float]) -> None:
        """Hand one aggregated point to ``publish`` under MLflow's names (``system/...``)."""
        prefix = self._metrics_prefix + (f"{self.node_id}/" if self.node_id else "")
        self._publish({prefix + k: float(v) for k, v in metrics.items()})
        self._logging_step += 1
        for monitor in self.monitors:
            monitor.clear_metrics()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop sampling; publish one last point (so even a short run has one). Safe to repeat."""
        if self._process is None:
            return
        self._shutdown_event.set()
        self._process.join(timeout_s)
        stuck, self._process = self._process.is_alive(), None
        if stuck:  # still inside publish (the server hangs): no second writer next to it
            return
        self._sample()  # the time since the last sample
        self._publish_now()
