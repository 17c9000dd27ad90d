"""The sweep's console progress: one row per trial instead of Tune's boxed tables.

:class:`LiveTable` is a Tune callback on the driver. On a terminal it keeps one table (trial,
method, step k/T, last metric, status, elapsed) refreshed in place with ``rich.live``; when the
console is not a terminal (CI logs, ``ray job submit`` output, a pipe) it appends one plain line
per event instead: a trial started, reported a step, was retried, finished, was stopped by the
scheduler or errored. Everything else Ray and Tune print goes to the sweep's log file
(:mod:`contavsep_platform.sweep_log`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback

from contavsep_platform.comparison import method_label
from contavsep_platform.spaces import CONFIRM_TRIAL_KEY, STRATEGY_KEY, SearchSpace
from contavsep_platform.trial import NUM_STEPS_KEY, STEP_KEY

if TYPE_CHECKING:
    from ray.tune.stopper import Stopper

# Rows the terminal table shows at most: running trials first, then the most recently ended
# (a 100-trial sweep must not scroll the live view off the screen).
MAX_ROWS = 20


@dataclass
class TrialLine:
    """What the console knows about one trial."""

    trial_id: str
    method: str  # strategy (mem k), as in the final ranking
    status: str = "running"  # running | retrying | complete | stopped | error
    step: int = 0  # completed incremental steps
    value: float | None = None  # the space's metric after the last reported step
    total: int = 0  # the trial's steps (a first_tasks search trains fewer than its confirmation); 0 = unknown yet
    started: float = 0.0  # time.monotonic() at the (last) start
    ended: float | None = None


class LiveTable(Callback):
    """Tune callback that shows the sweep's trials on ``stream`` (see the module docstring).

    ``stream`` is the console the user sees (the sweep routes ``sys.stdout`` to its log file
    while it runs). Tune pickles callbacks with the sweep for ``--resume``: the copy read back
    has no stream and stays silent (the sweep installs a fresh one after the restore).
    """

    def __init__(self, space: SearchSpace, stream: TextIO | None):
        self.space = space
        self.stream = stream
        self.metric = space.metric_key
        self.trials: dict[str, TrialLine] = {}
        self._live: Any = None
        self._started = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "stream": None,
            "metric": self.metric,
            "trials": {},
            "_live": None,
            "_started": 0.0,
        }

    @property
    def is_tty(self) -> bool:
        return bool(self.stream is not None and getattr(self.stream, "isatty", lambda: False)())

    # -- Tune's callback interface ---------------------------------------------------------------

    def setup(
        self,
        stop: Stopper | None = None,
        num_samples: int | None = None,
        total_num_samples: int | None = None,
        **info: Any,
    ) -> None:
        if self.stream is None or not self.is_tty or self._live is not None:
            return
        from rich.console import Console
        from rich.live import Live

        # sys.stdout/sys.stderr point at the log file while the sweep runs: rich must not
        # redirect them (it would print Ray's noise above the table).
        self._live = Live(
            get_renderable=self._render,
            console=Console(file=self.stream),
            refresh_per_second=1,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        self._live.start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self.trials.get(trial.trial_id)
        if line is None:
            line = self.trials[trial.trial_id] = TrialLine(trial.trial_id, self._method(trial.config))
        line.status, line.started, line.ended = "running", time.monotonic(), None
        self._event(line, "started")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        line = self._line(trial)
        step = result.get(STEP_KEY)
        if step is None:
            return
        line.step = int(step)
        line.total = int(result.get(NUM_STEPS_KEY) or self.space.num_steps)
        value = result.get(self.metric)
        line.value = float(value) if isinstance(value, (int, float)) else None
        if line.step < line.total:  # the last step's line is the trial's end line
            self._event(line, "")
        else:
            self._refresh()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self._line(trial)
        line.status = "retrying"
        self._event(line, "failed, retrying")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self._line(trial)
        line.status = "complete" if line.step >= (line.total or self.space.num_steps) else "stopped"
        line.ended = time.monotonic()
        self._event(line, line.status)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = self._line(trial)
        line.status, line.ended = "error", time.monotonic()
        self._event(line, "errored (the error is named after the sweep)")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def say(self, line: str) -> None:
        """A line for the console outside the table (on a terminal: above it)."""
        if self.stream is None:
            return
        if self._live is not None:
            self._live.console.print(line, markup=False, highlight=False, emoji=False)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop refreshing (the last frame stays on the terminal)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- rendering -------------------------------------------------------------------------------

    def _method(self, config: dict[str, Any]) -> str:
        config = config.get(CONFIRM_TRIAL_KEY) or config  # a confirmation trial's parameters are one grid value
        strategy = str(config.get(STRATEGY_KEY, "?"))
        if strategy not in self.space.strategies:
            return strategy
        factors = tuple(self.space.method_of(config).items())
        return method_label(strategy, int(self.space.trial_config(config).memory.per_class), factors)

    def _line(self, trial: Any) -> TrialLine:
        line = self.trials.get(trial.trial_id)
        if line is None:  # a trial restored by --resume that ended before it started here
            line = self.trials[trial.trial_id] = TrialLine(
                trial.trial_id, self._method(trial.config), started=time.monotonic()
            )
        return line

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _event(self, line: TrialLine, what: str) -> None:
        if self.stream is None:
            return
        if self._live is not None:
            self._live.refresh()
            return
        if not self.is_tty:
            print(self.format_line(line, what), file=self.stream, flush=True)

    def format_line(self, line: TrialLine, what: str = "") -> str:
        """One plain console line, e.g. ``trial 1a2b3c4d  contavsep (mem 1)  step 2/3  sdr 4.21  0:35``
        (``what`` follows: ``complete``, ``stopped``, ...; a start is ``trial ...  started``)."""
        parts = [f"trial {line.trial_id}", line.method]
        if what != "started":
            parts += [
                f"step {line.step}/{line.total or self.space.num_steps}",
                f"{self.metric} {_value(line.value)}",
                _elapsed(line),
            ]
        return "  ".join(parts + ([what] if what else []))

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        lines = sorted(self.trials.values(), key=lambda t: (t.ended is not None, -(t.ended or 0.0), t.started))
        counts = {
            s: sum(t.status == s for t in self.trials.values()) for s in ("running", "complete", "stopped", "error")
        }
        waiting = max(0, self.space.num_trials - len(self.trials))
        summary = (
            f"{counts['running']} running, {counts['complete']} complete, {counts['stopped']} stopped,"
            f" {counts['error']} errored, {waiting} waiting  |  {_seconds(time.monotonic() - self._started)}"
        )
        table = Table(box=None, pad_edge=False)
        for column in ("trial", "method", "step", self.metric, "status", "elapsed"):
            table.add_column(column, justify="right" if column in ("step", self.metric, "elapsed") else "left")
        for line in lines[:MAX_ROWS]:
            table.add_row(
                line.trial_id,
                line.method,
                f"{line.step}/{line.total or self.space.num_steps}",
                _value(line.value),
                line.status,
                _elapsed(line),
            )
        if len(lines) > MAX_ROWS:
            table.add_row(f"... {len(lines) - MAX_ROWS} more", "", "", "", "", "")
        return Group(table, Text(summary, style="dim"))


def _value(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _seconds(s: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    s = int(s)
    return f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _elapsed(line: TrialLine) -> str:
    return _seconds((line.ended if line.ended is not None else time.monotonic()) - line.started)
