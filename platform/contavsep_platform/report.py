"""The sweep report: configurations ranked over their repeats, read back from MLflow (paper
Table 1 / Fig. 3 style, with 95 % confidence intervals).

Reads what :mod:`contavsep_platform.tracking` logged: the sweep's parent run (found by the
``contavsep.sweep`` tag; its artifact ``search_space.yaml`` names the metric, the objectives and
the repeats), its child runs (one per trial: params = dotted config, ``final/...`` metrics,
per-step ``sdr`` history). The runs become :class:`~contavsep_platform.comparison.RunRecord`
objects and are ranked by :mod:`contavsep_platform.comparison`, the same code that ranks the
sweep's own Tune results, so the report and the sweep agree:

- a *configuration* is every run with the same config except the repeat keys (``train.seed``,
  ``data.seed``, ``data.shuffle_classes``) and bookkeeping keys (:data:`NOT_HYPERPARAMETERS`);
  its id is a hash of those params (not the sweep's Tune group id, which hashes the space's
  overrides that MLflow does not hold; both group the same runs);
- a *repeat* is a seed and class order (``seed0-order0``); differences between methods are
  paired on it.

Writes into one folder:

- ``report.md``: run, configuration and repeat counts; the ranking (best configuration per
  method: mean ± 95 % CI and n, paired differences vs fine-tuning and the next method, the
  conclusion); a Table-1-like table (rows: strategies in the paper's order; column groups:
  separator x with/without memory; cells: the best configuration of the cell, mean ± CI (n));
  every configuration; per-step SDR of each method's best configuration (mean ± CI per step);
  the Pareto front of a multi-objective sweep; every run with its status.
- ``final_scores.png`` (means with CI bars), ``step_sdr.png`` (Fig. 3 with CI bands),
  ``pareto.png`` (multi-objective sweeps), and the views of the search
  (:mod:`contavsep_platform.search_views`): ``importance.png``, ``parallel_coordinates.png``,
  ``r_matrices.png``;
- ``report.html``: the ranking and every view on one page a browser opens from disk
  (:mod:`contavsep_platform.report_html`); a view that does not apply says why.

:func:`log_report` writes the same folder as artifacts of the sweep's parent run (``report/``),
which the sweep does when it ends.

A run without ``final/...`` metrics (stopped early by ASHA, failed, still running) is listed but
never ranked, and neither is its configuration: a mean over fewer seen classes or fewer repeats
is not comparable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from contavsep.metric_names import FINAL_PREFIX, final_name, step_name_of_final
from contavsep.suggest import did_you_mean
from contavsep_platform.artifacts import (
    final_scores_figure,
    markdown_table,
    pareto_figure,
    save_figure,
    strategy_curves_figure,
)
from contavsep_platform.comparison import (
    CONFIDENCE,
    Comparison,
    Configuration,
    Estimate,
    RunRecord,
    compare,
    configurations_table,
    group_configurations,
    pareto_front,
    ranking_table,
    summary_lines,
    t_interval,
)
from contavsep_platform.errors import UserError
from contavsep_platform.report_html import HTML_FILE, write_html
from contavsep_platform.search_views import (
    View,
    importance_view,
    parallel_coordinates_view,
    r_matrices_view,
)
from contavsep_platform.spaces import (
    REPEAT_CONFIG_KEYS,
    SPLITS,
    named_metric,
    publish_key,
    result_key,
    selection_text,
)
from contavsep_platform.tracking import (
    CONFIG_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STAGE_TAG,
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
NOT_HYPERPARAMETERS = ("data.uri", "data.cache_dir", "train.device", "model.weights")
# Keys a repeat sets (spaces.RepeatSpec): the same configuration on another seed / class order.
REPEAT_KEYS = REPEAT_CONFIG_KEYS
# Estimated for every ranked method (the sweep metric first, then these, then the objectives).
RANKING_COLUMNS = ("sdr", "sir", "sar", "forgetting/sdr", "bwt/sdr")
PARETO_FILE = "pareto.png"
STEP_FILE = "step_sdr.png"
SPACE_ARTIFACT = "search_space.yaml"
R_ARTIFACT = "results/R.json"  # a trial's R matrices (tracking: results/R.json)
REPORT_ARTIFACTS = "report"  # the parent run's folder of the report (log_report)

log = logging.getLogger("contavsep.report")


class SweepNotFoundError(UserError):
    """No parent run of that sweep name in MLflow."""


def comparison_name(key: str) -> str:
    """An MLflow metric key as a comparison value name: ``final/forgetting_sdr`` ->
    ``forgetting/sdr``, ``final/sdr`` -> ``sdr``; other keys (``memory/clips``) are unchanged."""
    return step_name_of_final(key)


def _param_value(text: str) -> object:
    """An MLflow param string back to the number it was (for display and sorting)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


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
    def stage(self) -> str:
        """``search``, or ``confirm`` for a run of the confirmation stage."""
        return self.tags.get(STAGE_TAG, "search")

    @property
    def complete(self) -> bool:
        """Finished the whole task sequence (has final metrics)."""
        return final_name("sdr") in self.metrics

    def final(self, name: str) -> float:
        """A final value by step name (``sdr``, ``forgetting/sdr``); NaN where it was not logged."""
        value = self.metrics.get(final_name(name))
        return math.nan if value is None else float(value)

    @property
    def config_id(self) -> str:
        """A short hash of the configuration: every param but the repeat and bookkeeping keys."""
        kept = {k: v for k, v in self.params.items() if k not in REPEAT_KEYS and k not in NOT_HYPERPARAMETERS}
        return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:8]

    @property
    def repeat(self) -> str:
        """``seed<train.seed>-order<k>``: k is ``data.seed`` when the classes are shuffled, 0 for
        the dataset's own order (what spaces.RepeatSpec sets for class order k)."""
        shuffled = self.params.get("data.shuffle_classes", "False").lower() == "true"
        order = self.params.get("data.seed", "0") if shuffled else "0"
        return f"seed{self.params.get('train.seed', '0')}-order{order}"

    @property
    def values(self) -> dict[str, float]:
        """Final values by comparison name (``sdr``, ``forgetting/sdr``, ...); a value logged only
        per step (``memory/clips``) counts with its last step's value once the run is complete."""
        out = {comparison_name(k): float(v) for k, v in self.metrics.items() if k.startswith(FINAL_PREFIX)}
        if self.complete:
            for k, v in self.metrics.items():
                out.setdefault(k, float(v))
        return {k: v for k, v in out.items() if not math.isnan(v)}


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
    space_text: str = ""  # the parent's search_space.yaml ("" when it is missing)

    def ui_url(self) -> str | None:
        from contavsep_platform.mlflow_links import run_url

        return run_url(self.tracking_uri, self.experiment_id, self.parent_run_id)  # the model-training UI, not GenAI


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


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str:
    """A run's text artifact, or "" when the run has none of that name."""
    folder = path.rpartition("/")[0]
    if path not in {a.path for a in client.list_artifacts(run_id, folder or None)}:
        return ""
    with tempfile.TemporaryDirectory(prefix="contavsep-report-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def load_sweep(tracking_uri: str, sweep_name: str, experiment: str | None = None) -> SweepRecord:
    """The sweep's parent run (and its search space) and all its trials (child runs), read
    through MlflowClient.

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
            hint = did_you_mean(sweep_name, known)
            listing = f"; sweeps: {', '.join(known[:20])}" if known else "; no sweeps logged yet"
            raise SweepNotFoundError(f"no sweep named '{sweep_name}' in MLflow at {tracking_uri}{hint}{listing}")
        parent = parents[-1]  # the latest, if a name was ever reused across experiments
        children = _search_all(client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        # a confirmation stage's trials nest under its own run (role stage) below the parent
        for stage in [r for r in children if r.data.tags.get(ROLE_TAG) == "stage"]:
            children += _search_all(client, [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{stage.info.run_id}'")
        children = [r for r in children if r.data.tags.get(ROLE_TAG) != "stage"]
        space_text = _artifact_text(client, parent.info.run_id, SPACE_ARTIFACT)
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
        space_text=space_text,
    )


def step_history(client: MlflowClient, run_id: str, metric: str = "sdr") -> list[tuple[int, float]]:
    """``[(step, value)]`` of a per-step metric, ascending; a step logged twice (a trial that
    restarted from an earlier checkpoint) keeps its latest value."""
    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, float(m.value))
    return [(step, latest[step][1]) for step in sorted(latest)]


# ---------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SpaceInfo:
    """What the report needs from the sweep's search_space.yaml (all optional)."""

    objectives: tuple[tuple[str, str], ...] = ()  # (metric, mode): ``objectives``, else ``metric``/``mode`` (split named)
    seeds: int | None = None  # repeats.seeds
    class_orders: int | None = None  # repeats.class_orders
    problem: str = ""  # why the file could not be read ("" when fine or absent)
    select_on: str = "val"  # val | test (a sweep from before validation sets logged no val values: it chose on test)
    factors: tuple[str, ...] = ()  # keys that are part of the method
    first_tasks: int = 0  # protocol first_tasks: the tasks the search saw (0: the whole stream)


def space_info(text: str) -> SpaceInfo:
    """Parse the parent's ``search_space.yaml`` as written (not validated: the report of an old
    sweep must not fail on a space format that has changed since)."""
    if not text.strip():
        return SpaceInfo()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return SpaceInfo(problem=f"search_space.yaml is not valid YAML ({' '.join(str(exc).split())[:120]})")
    if not isinstance(raw, Mapping):
        return SpaceInfo()
    objectives: tuple[tuple[str, str], ...] = ()
    listed = raw.get("objectives")
    if isinstance(listed, list):
        objectives = tuple((str(o["metric"]), str(o.get("mode", "max"))) for o in listed if isinstance(o, Mapping) and "metric" in o)
    elif raw.get("metric") is not None:
        objectives = ((str(raw["metric"]), str(raw.get("mode", "max"))),)
    raw_repeats = raw.get("repeats")
    repeats = raw_repeats if isinstance(raw_repeats, Mapping) else {}
    seeds, orders = repeats.get("seeds", 1 if repeats else None), repeats.get("class_orders", 1 if repeats else None)
    select_on = str(raw.get("select_on", "val"))
    objectives = tuple((named_metric(m, select_on if select_on in SPLITS else "val"), mode) for m, mode in objectives)
    factors = tuple(str(f) for f in raw["factors"] if isinstance(f, str)) if isinstance(raw.get("factors"), list) else ()
    protocol = raw.get("protocol")
    protocol = {"type": protocol} if isinstance(protocol, str) else protocol if isinstance(protocol, Mapping) else {}
    first_tasks = int(protocol.get("tasks", 2)) if protocol.get("type") == "first_tasks" else 0
    return SpaceInfo(objectives, seeds if isinstance(seeds, int) else None, orders if isinstance(orders, int) else None,
                     select_on=select_on, factors=factors, first_tasks=first_tasks)


# ---------------------------------------------------------------------------- selecting


def strategy_order(names: Sequence[str]) -> list[str]:
    """Strategies in the paper's Table 1 order, then any others alphabetically."""
    known = [s for s in STRATEGY_LABELS if s in names]
    return known + sorted(set(names) - set(known))


def strategy_label(name: str) -> str:
    return STRATEGY_LABELS.get(name, name)


def searched_keys(trials: Sequence[TrialRecord]) -> list[str]:
    """Config keys whose value differs between the given trials (the searched ones); repeat
    and bookkeeping keys are not searched."""
    keys = sorted({k for t in trials for k in t.params})
    return [
        k for k in keys
        if k not in _GROUP_KEYS and k not in NOT_HYPERPARAMETERS and k not in REPEAT_KEYS
        and len({t.params.get(k) for t in trials}) > 1
    ]


@dataclass(frozen=True)
class RunTable:
    """The sweep's runs as the comparison sees them."""

    records: tuple[RunRecord, ...]  # one per (configuration, repeat): what is ranked
    duplicates: Mapping[str, str]  # run id -> run id it repeats (same configuration and repeat; left out)


def _selection(space: SpaceInfo, key: str, configurations: Sequence[Configuration],
               search_trials: Sequence[TrialRecord], confirm_trials: Sequence[TrialRecord],
               trials: Sequence[TrialRecord]) -> tuple[str, dict[str, Estimate] | None, str]:
    """``(select_by, chosen_on, selection)`` for :func:`compare`: how each method's configuration
    was chosen, read from the runs themselves. A confirmation stage chose on the search's runs
    (their ``key`` values, per configuration: tag ``contavsep.configuration``); without one, a
    method with one configuration made no choice; otherwise the choice is made here, on the
    validation value, or on test for a space that asked for it (or a sweep from before
    validation sets, which logged no validation values)."""
    if confirm_trials:
        by_group: dict[str, list[float]] = {}
        for t in search_trials:
            if t.complete and key in t.values:
                by_group.setdefault(t.tags.get(CONFIG_TAG, ""), []).append(t.values[key])
        group_of = {t.run_id: t.tags.get(CONFIG_TAG, "") for t in trials}
        chosen = {c.config_id: t_interval(by_group.get(group_of[c.runs[0].run_id], [])) for c in configurations}
        n = max((len(c.runs) for c in configurations), default=0)
        split = space.select_on if space.select_on in SPLITS else "val"
        return key, chosen, selection_text(split, first_tasks=space.first_tasks, confirmed_runs=n)
    per_method: dict[str, int] = {}
    for c in configurations:
        per_method[c.method] = per_method.get(c.method, 0) + 1
    if all(n == 1 for n in per_method.values()):
        return "", None, selection_text("none")
    logged = any(key in r.values for c in configurations for r in c.runs)
    if space.select_on == "val" and logged:
        return key, None, selection_text("val", first_tasks=space.first_tasks)
    legacy = "" if space.select_on == "test" else " (a sweep from before validation sets)"
    return "", None, selection_text("test", first_tasks=space.first_tasks) + legacy


def run_records(trials: Sequence[TrialRecord], factors: Sequence[str] = ()) -> RunTable:
    """RunRecords of the trials: strategies in the paper's order, configurations in order of
    first run. Two runs of one configuration on one repeat are the same experiment twice
    (an old sweep without repeats, a configuration proposed again): the first complete one
    counts, the others would only inflate n."""
    records: list[RunRecord] = []
    duplicates: dict[str, str] = {}
    kept: dict[tuple[str, str], int] = {}
    for name in strategy_order([t.strategy for t in trials]):
        group = [t for t in trials if t.strategy == name]
        keys = searched_keys(group)
        for t in group:
            record = RunRecord(
                run_id=t.run_id, config_id=t.config_id, repeat=t.repeat, strategy=name, memory=t.memory_per_class,
                params={k: _param_value(t.params[k]) for k in keys if k in t.params},
                values=t.values, complete=t.complete,
                factors=tuple((k, _param_value(t.params[k])) for k in factors if k in t.params),
            )
            slot = (t.config_id, t.repeat)
            if slot not in kept:
                kept[slot] = len(records)
                records.append(record)
            elif record.complete and not records[kept[slot]].complete:
                duplicates[records[kept[slot]].run_id] = record.run_id
                records[kept[slot]] = record
            else:
                duplicates[record.run_id] = records[kept[slot]].run_id
    return RunTable(tuple(records), duplicates)


def _default_mode(metric: str, objectives: Sequence[tuple[str, str]]) -> str:
    for name, mode in objectives:
        if name == metric:
            return mode
    return "min" if metric.startswith("forgetting/") else "max"


def step_estimates(histories: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, Estimate]]:
    """Mean and t-interval of a per-step value over runs: ``[(step, estimate)]``, ascending; a
    step counts the runs that logged it."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in history:
            if not math.isnan(value):
                by_step.setdefault(int(step), []).append(float(value))
    return [(step, t_interval(by_step[step])) for step in sorted(by_step)]


# ---------------------------------------------------------------------------- the report


def _steps_done(history: Sequence[tuple[int, float]]) -> int:
    return history[-1][0] + 1 if history else 0


def _with_n(e: Estimate) -> str:
    """``mean ± half-width (n)``: how many runs stand behind the number."""
    return "-" if e.n == 0 else f"{e.text()} ({e.n})"


def _ranking_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """ranking_table, with ``(n=k)`` on a value that fewer runs than the row's define and the
    number of pairs behind each paired difference."""
    header, rows = ranking_table(comparison)
    first = header.index("runs") + 1
    diffs = (header.index(h) for h in header if h.startswith("Δ"))
    vs_ref, vs_next = next(diffs), next(diffs)
    for row, ranked in zip(rows, comparison.rows):
        for i, metric in enumerate(comparison.columns):
            e = ranked.estimates[metric]
            if e.n != int(row[first - 1]):
                row[first + i] = f"{row[first + i]} (n={e.n})"
        for column, d in ((vs_ref, ranked.vs_reference), (vs_next, ranked.vs_next)):
            if d is not None and row[column].endswith(")"):
                row[column] = f"{row[column][:-1]}; {d.n} pair{'s' if d.n != 1 else ''})"
    return header, rows


def _objective_label(metric: str, mode: str) -> str:
    return f"{metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def build_report(
    sweep: SweepRecord,
    histories: Mapping[str, Sequence[tuple[int, float]]],
    out_dir: str | Path,
    metric: str | None = None,
    mode: str | None = None,
    r_document: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> Report:
    """Write ``report.md``, ``report.html`` and the PNG plots for ``sweep`` into ``out_dir``.

    ``histories[run_id]`` is the per-step SDR of each trial (:func:`step_history`);
    ``r_document(run_id)`` its ``results/R.json`` (None: not logged; default: no R matrices). ``metric``
    ranks the methods: a comparison name (``sdr``, ``forgetting/sdr``) or an MLflow key
    (``final/sdr``); default: the space's metric, else ``sdr``. ``mode``: default the space's
    mode for that metric, else ``min`` for forgetting and ``max`` for the rest.
    """
    space = space_info(sweep.space_text)
    first, first_mode = space.objectives[0] if space.objectives else ("val/sdr", "max")
    # what is ranked and published: a test value (the first objective's, unless --metric says)
    metric = comparison_name(metric) if metric else publish_key(first)
    mode = mode or _default_mode(metric, [(publish_key(m), d) for m, d in space.objectives])
    if mode not in ("max", "min"):
        raise UserError(f"mode must be 'max' or 'min', got '{mode}'")
    trials = list(sweep.trials)
    confirm_trials = [t for t in trials if t.stage == "confirm"]
    search_trials = [t for t in trials if t.stage != "confirm"]
    # a confirmation stage's runs are what is published; the search's only say what was chosen
    table = run_records(confirm_trials or search_trials, space.factors)
    logged = sorted({k for r in table.records if r.complete for k in r.values})
    if logged and metric not in logged:
        raise UserError(f"no complete run of sweep '{sweep.name}' logged '{metric}'{did_you_mean(metric, logged)};"
                        f" values: {', '.join(logged)}")
    objectives = tuple((publish_key(m), d) for m, d in space.objectives) if len(space.objectives) > 1 else ()
    columns = tuple(dict.fromkeys([*RANKING_COLUMNS, *(m for m, _ in objectives)]))
    configurations = group_configurations(table.records)
    select_by, chosen_on, selection = _selection(space, result_key(first), configurations, search_trials, confirm_trials, trials)
    comparison = compare(configurations, metric, mode, columns, select_by=select_by, select_mode=first_mode, chosen_on=chosen_on,
                         selection=selection)
    search = comparison
    if confirm_trials:
        search_configurations = group_configurations(run_records(search_trials, space.factors).records)
        search_columns = tuple(dict.fromkeys([result_key(first), *columns]))
        search = compare(search_configurations, result_key(first), first_mode, search_columns, selection=selection)
    trial_of = {t.run_id: t for t in trials}
    model_of = {r.config_id: trial_of[r.run_id].model for r in table.records}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    md: list[str] = [f"# Sweep `{sweep.name}`", ""]
    md += _header_lines(sweep, table, comparison, space, metric, mode) + [""]

    md += ["## Ranking (confirmed configuration per method)" if confirm_trials else "## Ranking (one configuration per method)", ""]
    header, rows = _ranking_rows(comparison)
    if rows:
        chosen = (f" chosen by `{select_by}` (validation; the value it was chosen on and the gap to the published"
                  f" mean are shown)" if select_by else "")
        md += [f"**Selection: {selection}.**", "",
               f"Methods ({', '.join(('strategy', 'memory size', *space.factors))}) by the mean final `{metric}` ({mode})"
               f" of their configuration{chosen} that completed all its runs. Values: mean ± half-width of the"
               f" {CONFIDENCE:.0%} Student-t interval over the configuration's runs; `runs` = how many runs stand behind each"
               " mean. Δ: paired by seed and class order (run minus run on the same repeat), with the interval of those"
               " differences and how many pairs.", ""]
        md.append(markdown_table(header, rows))
        md.append("")
    md += [f"- {line}" for line in summary_lines(comparison)]
    md.append(f"- A difference whose {CONFIDENCE:.0%} interval contains 0 is within the noise of the runs, not a win"
              " or a loss; one without an interval (a single pair) says nothing about the noise.")
    if rows:
        best = [r.configuration for r in comparison.rows]
        estimates = [{m: c.estimate(m) for m in ("sdr", "sir", "sar")} for c in best]
        files.append(save_figure(final_scores_figure(
            [(c.method, e["sdr"].mean, e["sir"].mean, e["sar"].mean) for c, e in zip(best, estimates)],
            errors=[(e["sdr"].half_width, e["sir"].half_width, e["sar"].half_width) for e in estimates],
            title=f"Best configuration per method: final scores (mean ± {CONFIDENCE:.0%} CI)",
        ), out / "final_scores.png"))
        md += ["", "![final scores](final_scores.png)"]
    md.append("")

    md += _table1_lines(comparison, model_of, metric, mode) + [""]

    md += ["## Configurations of the search" if confirm_trials else "## Configurations", ""]
    if search.configurations:
        header, rows = configurations_table(search)
        md += ["Every configuration with how many of its runs completed; a configuration counts in the ranking only"
               " when all its runs completed." + (" The ranking above comes from the confirmation runs, not these."
                                                  if confirm_trials else ""), "", markdown_table(header, rows)]
    else:
        md.append("No runs logged.")
    md.append("")

    md += [f"## SDR over all seen classes after each step (best configuration per method, mean ± {CONFIDENCE:.0%} CI (n))", ""]
    per_step = {
        r.configuration.method: step_estimates([histories.get(run.run_id, []) for run in r.configuration.runs if run.complete])
        for r in comparison.rows
    }
    steps = sorted({s for points in per_step.values() for s, _ in points})
    if steps:
        step_rows: list[list[str | None]] = []  # None: no value at that step ('-')
        for label, points in per_step.items():
            by_step = dict(points)
            step_rows.append([label, *(_with_n(by_step[s]) if s in by_step else None for s in steps)])
        md.append(markdown_table(["method"] + [f"step {s + 1}" for s in steps], step_rows))
        curves = {label: [(s, e.mean) for s, e in points] for label, points in per_step.items()}
        bands = {label: [(s, e.low, e.high) for s, e in points] for label, points in per_step.items()}
        files.append(save_figure(strategy_curves_figure(curves, bands=bands), out / STEP_FILE))
        md += ["", f"![SDR after each step]({STEP_FILE}) (shaded: {CONFIDENCE:.0%} t-interval per step)"]
    else:
        md.append("No per-step results of a ranked configuration.")
    md.append("")

    pareto_view = View("Pareto front", None, "Not drawn: the space has a single objective"
                       f" ({metric}); a Pareto front needs two (space `objectives`).")
    if objectives:
        lines, figure = _pareto(comparison, objectives, out)
        md += lines + [""]
        if figure is not None:
            files.append(figure)
        pareto_view = View(lines[0].removeprefix("## "), figure, f"Means with {CONFIDENCE:.0%} CI bars of the first two"
                           " objectives; front members marked." if figure else f"Not drawn: {' '.join(lines[2:])}")

    views = _views(comparison, space, metric, mode, per_step, out, pareto_view, trials, r_document, search)
    files += [v.file for v in views if v.file is not None and v.file not in files]
    md += ["## Views of the search", "", f"The page [{HTML_FILE}]({HTML_FILE}) shows them together.", ""]
    for view in views:
        md.append(f"- **{view.title}**: " + (f"[{view.file.name}]({view.file.name})" if view.file else view.caption))
        md += [f"  - {finding}" for finding in view.findings]
    md.append("")

    md += ["## All runs", ""]
    if trials:
        header = ["run", "stage", "configuration", "repeat", "method", "status", "steps done", "final SDR", "forgetting SDR"]
        run_rows: list[list[object]] = []

        def method_of(t: TrialRecord) -> str:
            return f"{strategy_label(t.strategy)} ({', '.join([f'mem {t.memory_per_class}', *(t.params.get(k, '?') for k in space.factors)])})"

        counted = {r.run_id for r in table.records}
        position = {c.config_id: i for i, c in enumerate(comparison.configurations)}
        for record in sorted(
            (*table.records, *(_record_of(trial_of[i]) for i in table.duplicates)),
            key=lambda r: (position[r.config_id], r.repeat, r.run_id not in counted),
        ):
            t = trial_of[record.run_id]
            status = "complete" if t.complete else t.status
            if record.run_id not in counted:
                status += f" (repeats {trial_of[table.duplicates[record.run_id]].name}; not counted)"
            run_rows.append([t.name, t.stage, record.config_id, record.repeat, method_of(t), status,
                             _steps_done(histories.get(t.run_id, [])), t.final("sdr"), t.final("forgetting/sdr")])
        for t in search_trials if confirm_trials else ():  # what chose the confirmed configurations
            run_rows.append([t.name, t.stage, t.config_id, t.repeat, method_of(t),
                             "complete" if t.complete else t.status,
                             _steps_done(histories.get(t.run_id, [])), t.final("sdr"), t.final("forgetting/sdr")])
        md.append(markdown_table(header, run_rows))
    else:
        md.append("No runs logged.")
    text = "\n".join(md) + "\n"
    report_path = out / "report.md"
    tmp = out / "report.md.tmp"
    tmp.write_text(text)
    tmp.replace(report_path)
    intro = [line.strip().replace("`", "") for line in _header_lines(sweep, table, comparison, space, metric, mode)]
    page = write_html(out, f"Sweep {sweep.name}", intro, _ranking_rows(comparison), views)
    return Report(markdown=text, files=(report_path, page, *files))


def _views(comparison: Comparison, space: SpaceInfo, metric: str, mode: str,
           per_step: Mapping[str, Sequence[tuple[int, Estimate]]], out: Path, pareto_view: View,
           trials: Sequence[TrialRecord], r_document: Callable[[str], Mapping[str, Any] | None] | None,
           search: Comparison | None = None) -> list[View]:
    """Importance, parallel coordinates (of the search's configurations: ``search``), step
    curves, Pareto front and R matrices, in that order."""
    objectives = [(publish_key(m), d) for m, d in space.objectives] if len(space.objectives) > 1 else [(metric, mode)]
    if not any(m == "forgetting/sdr" for m, _ in objectives):
        objectives.append(("forgetting/sdr", "min"))  # what every method trades its SDR against
    search = search or comparison
    views = [importance_view(search, objectives, out), parallel_coordinates_view(search, objectives, out)]

    step_title = f"SDR after each step (best configuration per method, mean ± {CONFIDENCE:.0%} CI)"
    if (out / STEP_FILE).exists() and per_step:
        most = max((e.n for points in per_step.values() for _, e in points), default=0)
        caption = (f"Shaded: the {CONFIDENCE:.0%} t-interval over each configuration's repeats." if most > 1 else
                   "One run per configuration: no interval (a space with `repeats` draws the bands).")
        views.append(View(step_title, out / STEP_FILE, caption))
    else:
        views.append(View(step_title, None, "Not drawn: no ranked configuration has per-step results."))
    views.append(pareto_view)

    name_of = {t.run_id: t.name for t in trials}
    best_runs: dict[str, tuple[str, Mapping[str, Any] | None]] = {}
    for row in comparison.rows:  # best method first: each strategy's first row is its best configuration
        c = row.configuration
        if c.strategy in best_runs:
            continue
        values = c.per_repeat(metric)
        run = max((r for r in c.runs if r.repeat in values), key=lambda r: values[r.repeat] * (1 if mode == "max" else -1),
                  default=None)
        if run is not None:
            label = f"{name_of.get(run.run_id, run.run_id)} ({c.method}, {metric} {values[run.repeat]:.2f})"
            best_runs[c.strategy] = (label, r_document(run.run_id) if r_document else None)
    views.append(r_matrices_view({s: best_runs[s] for s in strategy_order(list(best_runs))}, out))
    return views


def _record_of(trial: TrialRecord) -> RunRecord:
    """A left-out duplicate run as a record (for the runs table only)."""
    return RunRecord(trial.run_id, trial.config_id, trial.repeat, trial.strategy, trial.memory_per_class, {}, trial.values,
                     trial.complete)


def _header_lines(sweep: SweepRecord, table: RunTable, comparison: Comparison, space: SpaceInfo, metric: str,
                  mode: str) -> list[str]:
    runs = len(sweep.trials)
    complete = sum(t.complete for t in sweep.trials)
    configs = comparison.configurations
    lines = [f"{runs} runs: {complete} complete, {runs - complete} stopped early, failed or running."
             f" Sweep run status: {sweep.status}.  ", f"Selection: {comparison.selection}.  "]
    if configs:
        sizes = sorted({len(c.runs) for c in configs})
        per = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
        ranked = sum(c.complete for c in configs)
        lines.append(f"{len(configs)} configurations with {per} repeat(s) (seed x class order) each: {ranked} completed all"
                     f" their runs, {len(comparison.incomplete)} did not (not ranked).  ")
    if space.seeds is not None:
        lines.append(f"The space asks for {space.seeds} seed(s) x {space.class_orders} class order(s) per configuration.  ")
    if table.duplicates:
        lines.append(f"{len(table.duplicates)} run(s) repeat another run's configuration and repeat and are not counted.  ")
    lines.append(f"Ranking by the final `{metric}` ({mode}).  ")
    if space.problem:
        lines.append(f"Note: {space.problem}.  ")
    if sweep.ui_url():
        lines.append(f"MLflow: {sweep.ui_url()}  ")
    for key, value in sorted(sweep.tags.items()):
        # The sweep's own tags (data hash, git commit, ...), not MLflow's bookkeeping.
        if key in (ROLE_TAG, SWEEP_TAG) or (key.startswith("mlflow.") and key != "mlflow.source.git.commit"):
            continue
        lines.append(f"`{key}`: {value}  ")
    return lines


def _model_order(model: str) -> tuple[int, str]:
    return (list(MODEL_LABELS).index(model) if model in MODEL_LABELS else 99, model)


def _table1_lines(comparison: Comparison, model_of: Mapping[str, str], metric: str, mode: str) -> list[str]:
    """Rows: strategies; column groups: separator x with/without memory; a cell: the ranking's
    configuration of the cell's method (chosen as the ranking chose it, never on the numbers
    shown; a cell holding several memory sizes shows the best of those methods by ``metric``)."""
    lines = [f"## Table 1 style: SDR / SIR / SAR after the last step (dB, mean ± {CONFIDENCE:.0%} CI (n))", ""]
    complete = [r.configuration for r in comparison.rows]
    groups = sorted({(model_of[c.config_id], c.memory > 0) for c in complete}, key=lambda g: (*_model_order(g[0]), g[1]))
    if not groups:
        return lines + ["No configuration completed all its runs."]
    header = ["method"]
    for model, memory in groups:
        header += [f"{MODEL_LABELS.get(model, model)} {'w/' if memory else 'w/o'} memory SDR", "SIR", "SAR"]
    rows = []
    for name in strategy_order([c.strategy for c in complete]):
        row: list[object] = [strategy_label(name)]
        for model, memory in groups:
            cell = [c for c in complete if c.strategy == name and model_of[c.config_id] == model and (c.memory > 0) == memory]
            ranked = compare(cell, metric, mode, ("sir", "sar")).rows if cell else ()
            best = ranked[0].configuration if ranked else None
            row += [_with_n(best.estimate(m)) if best else None for m in ("sdr", "sir", "sar")]
        rows.append(row)
    return lines + [markdown_table(header, rows)]


def _pareto(comparison: Comparison, objectives: Sequence[tuple[str, str]], out: Path) -> tuple[list[str], Path | None]:
    names = ", ".join(f"{m} {d}" for m, d in objectives)
    lines = [f"## Pareto front ({names})", ""]
    first, direction = objectives[0]
    front = sorted(pareto_front(comparison.configurations, objectives),  # best on the first objective first
                   key=lambda c: c.estimate(first).mean, reverse=direction == "max")
    if not front:
        return lines + ["No configuration completed all its runs with every objective defined."], None
    lines += [f"Configurations that no other complete configuration beats on the means of all objectives. Means carry"
              f" their {CONFIDENCE:.0%} intervals: front members whose intervals overlap are not told apart by these runs.",
              ""]
    header = ["configuration", "method", *[f"{m} (mean ± {CONFIDENCE:.0%} CI (n))" for m, _ in objectives], "parameters"]
    rows = [[c.config_id, c.method, *[_with_n(c.estimate(m)) for m, _ in objectives],
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.params.items()) or "-"]
            for c in front]
    lines.append(markdown_table(header, rows))
    (mx, dx), (my, dy) = objectives[0], objectives[1]
    on_front = {c.config_id for c in front}
    points = []
    for c in comparison.configurations:
        ex, ey = c.estimate(mx), c.estimate(my)
        if c.complete and not math.isnan(ex.mean) and not math.isnan(ey.mean):
            points.append((f"{c.config_id} {c.method}", ex.mean, ex.half_width, ey.mean, ey.half_width, c.config_id in on_front))
    path = save_figure(pareto_figure(points, _objective_label(mx, dx), _objective_label(my, dy)), out / PARETO_FILE)
    lines += ["", f"![Pareto front]({PARETO_FILE}) (first two objectives; bars: {CONFIDENCE:.0%} CI)"]
    return lines, path


def write_report(
    tracking_uri: str,
    sweep_name: str,
    out_dir: str | Path,
    experiment: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
) -> Report:
    """Read the sweep from MLflow and write its report into ``out_dir``."""
    sweep = load_sweep(tracking_uri, sweep_name, experiment)
    client = MlflowClient(tracking_uri)
    with _talking_to(tracking_uri):
        histories = {t.run_id: step_history(client, t.run_id, "sdr") for t in sweep.trials}

        def r_document(run_id: str) -> Mapping[str, Any] | None:
            text = _artifact_text(client, run_id, R_ARTIFACT)
            return json.loads(text) if text else None

        return build_report(sweep, histories, out_dir, metric, mode, r_document)


def log_report(tracking_uri: str, sweep_name: str, run_id: str) -> bool:
    """Write the sweep's report and log it as artifacts of the parent run ``run_id`` (under
    ``report/``). Never raises: a sweep that ended must not fail on its report; returns whether
    it was logged."""
    try:
        with tempfile.TemporaryDirectory(prefix="contavsep-report-") as tmp:
            write_report(tracking_uri, sweep_name, tmp)
            with _talking_to(tracking_uri):
                MlflowClient(tracking_uri).log_artifacts(run_id, tmp, REPORT_ARTIFACTS)
        return True
    except Exception as exc:  # noqa: BLE001 - reported, and `contavsep report` writes it again
        log.warning("the report of sweep %s was not logged to MLflow (%s); `contavsep report --sweep %s` writes it",
                    sweep_name, " ".join(str(exc).split())[:300], sweep_name)
        return False

