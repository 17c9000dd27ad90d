"""The sweep report: tables and plots read back from MLflow (paper Table 1 / Fig. 3 style).

Reads what :mod:`contavsep_platform.tracking` logged: the sweep's parent run (found by the
``contavsep.sweep`` tag), its child runs (one per trial: params = dotted config, ``final/...``
metrics, per-step ``sdr`` history). Writes into one folder:

- ``report.md``: trial counts; the best trial per strategy (final SDR/SIR/SAR, forgetting, BWT,
  average incremental SDR, and the hyperparameters that were searched for that strategy); a
  Table-1-like table (rows: strategies in the paper's order; column groups: separator x
  with/without memory; cells: the best trial of the group); per-step SDR of the best trials;
  every trial with its status.
- ``step_sdr.png``: SDR over all seen classes after each step, one line per strategy (Fig. 3).
- ``final_scores.png``: final SDR/SIR/SAR of the best trial per strategy.

A trial without ``final/...`` metrics (stopped early by ASHA, failed, still running) is listed
but never "best": its SDR over fewer seen classes is not comparable.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from contavsep_platform.artifacts import final_scores_figure, markdown_table, save_figure, strategy_curves_figure
from contavsep_platform.cli import UserError
from contavsep_platform.tracking import (
    FINAL_PREFIX,
    PARENT_TAG,
    ROLE_TAG,
    STRATEGY_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    is_transient,
    short_http_requests,
)

# The paper's order and names of the methods (Table 1); unknown strategies follow, sorted.
STRATEGY_LABELS = {
    "finetune": "Fine-tuning",
    "lwf": "LwF",
    "ewc": "EWC",
    "plop": "PLOP",
    "ewf": "EWF",
    "avcil": "AV-CIL",
    "contavsep": "ContAV-Sep",
    "joint": "Upper bound (joint)",
}
MODEL_LABELS = {"iquery": "iQuery", "coseparation": "Co-Separation"}
# Config keys that identify a trial's group rather than being searched hyperparameters.
_GROUP_KEYS = ("strategy.name",)
# Keys that differ between trials for bookkeeping reasons, not as hyperparameters.
_NOT_HYPERPARAMETERS = ("data.uri", "data.cache_dir", "train.device", "model.weights")


class SweepNotFoundError(UserError):
    """No parent run of that sweep name in MLflow."""


@dataclass(frozen=True)
class TrialRecord:
    """One child run: its config params (strings, as MLflow stores them) and latest metrics."""

    run_id: str
    name: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def strategy(self) -> str:
        return self.params.get("strategy.name") or self.tags.get(STRATEGY_TAG) or "?"

    @property
    def model(self) -> str:
        return self.params.get("model.name", "?")

    @property
    def memory_per_class(self) -> int:
        try:
            return int(float(self.params.get("memory.per_class", "0")))
        except ValueError:
            return 0

    @property
    def complete(self) -> bool:
        """Finished the whole task sequence (has final metrics)."""
        return f"{FINAL_PREFIX}sdr" in self.metrics

    def final(self, name: str) -> float:
        value = self.metrics.get(FINAL_PREFIX + name)
        return math.nan if value is None else float(value)


@dataclass(frozen=True)
class SweepRecord:
    """A sweep as MLflow holds it."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    status: str
    tags: Mapping[str, str]
    trials: tuple[TrialRecord, ...]

    def ui_url(self) -> str | None:
        if not self.tracking_uri.startswith("http"):
            return None
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.parent_run_id}"


@dataclass(frozen=True)
class Report:
    markdown: str
    files: tuple[Path, ...]


# ---------------------------------------------------------------------------- reading MLflow


@contextmanager
def _talking_to(tracking_uri: str) -> Iterator[None]:
    """Short timeouts; an unreachable server becomes one clear error."""
    try:
        with short_http_requests(10, 1):
            yield
    except MlflowException as exc:
        if is_transient(exc):
            raise UserError(
                f"MLflow at {tracking_uri} is unreachable ({' '.join(str(exc).split())[:200]}); start the local services"
                " (`contavsep services up`) or set MLFLOW_TRACKING_URI"
            ) from None
        raise


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    runs: list = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def sweep_names(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    """Names of all sweeps (parent runs) in the experiments."""
    runs = _search_all(client, experiment_ids, f"tags.`{ROLE_TAG}` = 'sweep'")
    return sorted({r.data.tags.get(SWEEP_TAG, "") for r in runs} - {""})


def load_sweep(tracking_uri: str, sweep_name: str, experiment: str | None = None) -> SweepRecord:
    """The sweep's parent run and all its trials (child runs), read through MlflowClient.

    ``experiment``: restrict to this experiment name; default: look in all active experiments.
    Raises :class:`SweepNotFoundError` (naming the closest sweep) or :class:`UserError`.
    """
    if "'" in sweep_name or "\\" in sweep_name:
        raise UserError(f"sweep name '{sweep_name}' must not contain quotes or backslashes")
    client = MlflowClient(tracking_uri)
    with _talking_to(tracking_uri):
        if experiment is not None:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise UserError(f"MLflow at {tracking_uri} has no experiment '{experiment}'")
            experiment_ids = [exp.experiment_id]
        else:
            experiment_ids = [e.experiment_id for e in client.search_experiments()]
        if not experiment_ids:
            raise SweepNotFoundError(f"MLflow at {tracking_uri} has no experiments yet: run a sweep first")
        parents = _search_all(
            client, experiment_ids, f"tags.`{SWEEP_TAG}` = '{sweep_name}' and tags.`{ROLE_TAG}` = 'sweep'"
        )
        if not parents:
            known = sweep_names(client, experiment_ids)
            close = difflib.get_close_matches(sweep_name, known, n=1, cutoff=0.0)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            listing = f"; sweeps: {', '.join(known[:20])}" if known else "; no sweeps logged yet"
            raise SweepNotFoundError(f"no sweep named '{sweep_name}' in MLflow at {tracking_uri}{hint}{listing}")
        parent = parents[-1]  # the latest, if a name was ever reused across experiments
        children = _search_all(client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    trials = tuple(
        TrialRecord(
            run_id=r.info.run_id,
            name=r.data.tags.get(TRIAL_TAG) or r.info.run_name or r.info.run_id,
            status=r.info.status,
            params=dict(r.data.params),
            metrics=dict(r.data.metrics),
            tags=dict(r.data.tags),
        )
        for r in children
    )
    return SweepRecord(
        name=sweep_name,
        tracking_uri=tracking_uri,
        experiment_id=parent.info.experiment_id,
        parent_run_id=parent.info.run_id,
        status=parent.info.status,
        tags=dict(parent.data.tags),
        trials=trials,
    )


def step_history(client: MlflowClient, run_id: str, metric: str = "sdr") -> list[tuple[int, float]]:
    """``[(step, value)]`` of a per-step metric, ascending; a step logged twice (a trial that
    restarted from an earlier checkpoint) keeps its latest value."""
    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, float(m.value))
    return [(step, latest[step][1]) for step in sorted(latest)]


# ---------------------------------------------------------------------------- selecting


def strategy_order(names: Sequence[str]) -> list[str]:
    """Strategies in the paper's Table 1 order, then any others alphabetically."""
    known = [s for s in STRATEGY_LABELS if s in names]
    return known + sorted(set(names) - set(known))


def strategy_label(name: str) -> str:
    return STRATEGY_LABELS.get(name, name)


def _better(a: float, b: float, mode: str) -> bool:
    if math.isnan(b):
        return not math.isnan(a)
    return a > b if mode == "max" else a < b


def best_trial(trials: Sequence[TrialRecord], metric: str = "final/sdr", mode: str = "max") -> TrialRecord | None:
    """The complete trial with the best ``metric`` (an MLflow metric key), or None."""
    if mode not in ("max", "min"):
        raise UserError(f"mode must be 'max' or 'min', got '{mode}'")
    best: TrialRecord | None = None
    for trial in trials:
        if not trial.complete or metric not in trial.metrics:
            continue
        if best is None or _better(float(trial.metrics[metric]), float(best.metrics[metric]), mode):
            best = trial
    return best


def best_per_strategy(trials: Sequence[TrialRecord], metric: str = "final/sdr", mode: str = "max") -> dict[str, TrialRecord]:
    """{strategy: its best complete trial}, in the paper's order; strategies without a
    complete trial are left out."""
    out: dict[str, TrialRecord] = {}
    for name in strategy_order([t.strategy for t in trials]):
        best = best_trial([t for t in trials if t.strategy == name], metric, mode)
        if best is not None:
            out[name] = best
    return out


def searched_keys(trials: Sequence[TrialRecord]) -> list[str]:
    """Config keys whose value differs between the given trials (the searched ones)."""
    keys = sorted({k for t in trials for k in t.params})
    return [
        k for k in keys
        if k not in _GROUP_KEYS and k not in _NOT_HYPERPARAMETERS and len({t.params.get(k) for t in trials}) > 1
    ]


# ---------------------------------------------------------------------------- the report


def _steps_done(history: Sequence[tuple[int, float]]) -> int:
    return history[-1][0] + 1 if history else 0


def build_report(
    sweep: SweepRecord,
    histories: Mapping[str, Sequence[tuple[int, float]]],
    out_dir: str | Path,
    metric: str = "final/sdr",
    mode: str = "max",
) -> Report:
    """Write ``report.md`` and the PNG plots for ``sweep`` into ``out_dir``.

    ``histories[run_id]`` is the per-step SDR of each trial (:func:`step_history`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials = list(sweep.trials)
    best = best_per_strategy(trials, metric, mode)
    files: list[Path] = []
    md: list[str] = [f"# Sweep `{sweep.name}`", ""]
    complete = sum(t.complete for t in trials)
    md.append(
        f"{len(trials)} trials: {complete} complete, {len(trials) - complete} stopped early, failed or running."
        f" Sweep run status: {sweep.status}. Selection: best `{metric}` ({mode}) among complete trials.  "
    )
    if sweep.ui_url():
        md.append(f"MLflow: {sweep.ui_url()}  ")
    for key, value in sorted(sweep.tags.items()):
        # The sweep's own tags (data hash, git commit, ...), not MLflow's bookkeeping.
        if key in (ROLE_TAG, SWEEP_TAG) or (key.startswith("mlflow.") and key != "mlflow.source.git.commit"):
            continue
        md.append(f"`{key}`: {value}  ")
    md.append("")

    md += ["## Best trial per strategy", ""]
    if best:
        header = ["strategy", "trial", "model", "memory/class", "SDR", "SIR", "SAR", "forgetting SDR", "BWT SDR",
                  "avg incr. SDR", "trials (complete)", "searched values"]
        rows = []
        for name, trial in best.items():
            group = [t for t in trials if t.strategy == name]
            values = ", ".join(f"{k}={trial.params.get(k)}" for k in searched_keys(group))
            rows.append([
                strategy_label(name), trial.name, MODEL_LABELS.get(trial.model, trial.model), trial.memory_per_class,
                trial.final("sdr"), trial.final("sir"), trial.final("sar"), trial.final("forgetting_sdr"),
                trial.final("bwt_sdr"), trial.final("avg_incremental_sdr"),
                f"{len(group)} ({sum(t.complete for t in group)})", values or "-",
            ])
        md.append(markdown_table(header, rows))
        files.append(save_figure(
            final_scores_figure([(strategy_label(n), t.final("sdr"), t.final("sir"), t.final("sar")) for n, t in best.items()]),
            out / "final_scores.png",
        ))
        md += ["", "![final scores](final_scores.png)"]
    else:
        md.append("No trial finished its whole task sequence yet.")
    md.append("")

    md += ["## Table 1 style: SDR / SIR / SAR after the last step (dB)", ""]
    groups = sorted({(t.model, t.memory_per_class > 0) for t in trials if t.complete},
                    key=lambda g: (list(MODEL_LABELS).index(g[0]) if g[0] in MODEL_LABELS else 99, g[0], g[1]))
    if groups:
        header = ["method"]
        for model, memory in groups:
            label = f"{MODEL_LABELS.get(model, model)} {'w/' if memory else 'w/o'} memory"
            header += [f"{label} SDR", "SIR", "SAR"]
        rows = []
        for name in strategy_order([t.strategy for t in trials]):
            row: list[object] = [strategy_label(name)]
            for model, memory in groups:
                cell = best_trial([t for t in trials if t.strategy == name and t.model == model
                                   and (t.memory_per_class > 0) == memory], metric, mode)
                row += [cell.final(m) if cell else None for m in ("sdr", "sir", "sar")]
            rows.append(row)
        md.append(markdown_table(header, rows))
    else:
        md.append("No complete trials.")
    md.append("")

    md += ["## SDR over all seen classes after each step (best trial per strategy)", ""]
    curves = {strategy_label(n): list(histories.get(t.run_id, [])) for n, t in best.items()}
    steps = sorted({s for points in curves.values() for s, _ in points})
    if steps:
        header = ["strategy"] + [f"step {s + 1}" for s in steps]
        rows = []
        for label, points in curves.items():
            by_step = dict(points)
            rows.append([label] + [by_step.get(s) for s in steps])
        md.append(markdown_table(header, rows))
        files.append(save_figure(strategy_curves_figure(curves), out / "step_sdr.png"))
        md += ["", "![SDR after each step](step_sdr.png)"]
    else:
        md.append("No per-step results.")
    md.append("")

    md += ["## All trials", ""]
    if trials:
        header = ["trial", "strategy", "status", "steps done", "final SDR", "forgetting SDR", "searched values"]
        rows = []
        for name in strategy_order([t.strategy for t in trials]):
            group = [t for t in trials if t.strategy == name]
            keys = searched_keys(group)
            for t in group:
                rows.append([
                    t.name, strategy_label(name), t.status if not t.complete else "complete",
                    _steps_done(histories.get(t.run_id, [])), t.final("sdr"), t.final("forgetting_sdr"),
                    ", ".join(f"{k}={t.params.get(k)}" for k in keys) or "-",
                ])
        md.append(markdown_table(header, rows))
    else:
        md.append("No trials logged.")
    text = "\n".join(md) + "\n"
    report_path = out / "report.md"
    tmp = out / "report.md.tmp"
    tmp.write_text(text)
    tmp.replace(report_path)
    return Report(markdown=text, files=(report_path, *files))


def write_report(
    tracking_uri: str,
    sweep_name: str,
    out_dir: str | Path,
    experiment: str | None = None,
    metric: str = "final/sdr",
    mode: str = "max",
) -> Report:
    """Read the sweep from MLflow and write its report into ``out_dir``."""
    sweep = load_sweep(tracking_uri, sweep_name, experiment)
    client = MlflowClient(tracking_uri)
    with _talking_to(tracking_uri):
        histories = {t.run_id: step_history(client, t.run_id, "sdr") for t in sweep.trials}
    return build_report(sweep, histories, out_dir, metric, mode)
