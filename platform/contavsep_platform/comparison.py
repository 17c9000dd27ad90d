"""How a sweep's results become a claim: configurations over repeats, t-intervals, paired
differences, rankings that say when a difference is within the noise, and Pareto fronts.

Inputs are plain :class:`RunRecord` objects (one per Tune trial / MLflow child run), so the
sweep's own summary (from Tune results) and the report (from MLflow) rank alike:

- a *configuration* is every run with the same resolved settings except the repeat (seed and
  class order); its estimate of a metric is the mean over its repeats with a 95 % Student-t
  interval (n - 1 degrees of freedom; no interval from one run);
- a *method* is a strategy with a memory size and the values of the space's factors (the
  paper's Table 1 rows); its entry in the ranking is its best complete configuration by the
  *selection* metric (a validation value: ``select_by``), shown with the metric it is ranked and
  published on (a test value), so a table never chooses with the numbers it shows;
- differences between methods are *paired*: run by run on the same seed and class order (the
  same test mixtures, the same initial weights), then a t-interval of the differences. A
  difference whose interval contains 0 is reported as within the noise, never as a win.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

CONFIDENCE = 0.95
REFERENCE_STRATEGY = "finetune"


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with its ``CONFIDENCE`` t-interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    values: tuple[float, ...] = ()  # the values behind it (per run, or per pair for a difference)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, digits: int = 2) -> str:
        """``4.03 ± 0.52`` (95 % CI half-width) or ``4.03`` alone when there is no interval."""
        if math.isnan(self.mean):
            return "-"
        if self.n < 2 or math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"

    def verdict(self, mode: str = "max") -> str:
        """For a difference a - b: ``better`` / ``worse`` when the interval excludes 0 (in the
        metric's direction), ``within noise`` when it contains 0, ``n < 2`` without interval."""
        if self.n < 2 or math.isnan(self.low):
            return "n < 2"
        if self.low > 0:
            return "better" if mode == "max" else "worse"
        if self.high < 0:
            return "worse" if mode == "max" else "better"
        return "within noise"


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean and two-sided Student-t interval of ``values`` (NaN values are an error: pass only
    defined values)."""
    from scipy import stats

    xs = [float(v) for v in values]
    if any(math.isnan(v) for v in xs):
        raise ValueError("t_interval got NaN values; leave undefined runs out")
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / n
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1, math.nan, tuple(xs))
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, sd, tuple(xs))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> Estimate:
    """t-interval of ``a[r] - b[r]`` over the repeats ``r`` both have (same seed and order)."""
    common = sorted(set(a) & set(b))
    return t_interval([a[r] - b[r] for r in common])


@dataclass(frozen=True)
class RunRecord:
    """One run (trial) of a configuration."""

    run_id: str
    config_id: str  # the configuration (every setting but the repeat)
    repeat: str  # seed and class order, e.g. "s1-o0"
    strategy: str
    memory: int  # memory.per_class
    params: Mapping[str, object]  # the searched values that identify the configuration
    values: Mapping[str, float]  # final values: sdr, forgetting/sdr, ... (missing = undefined)
    complete: bool  # reached the last step
    factors: tuple[tuple[str, object], ...] = ()  # (key, value) of the space's factors: part of the method


@dataclass(frozen=True)
class Configuration:
    """All runs of one configuration."""

    config_id: str
    strategy: str
    memory: int
    params: Mapping[str, object]
    runs: tuple[RunRecord, ...]
    factors: tuple[tuple[str, object], ...] = ()

    @property
    def method(self) -> str:
        return method_label(self.strategy, self.memory, self.factors)

    @property
    def complete(self) -> bool:
        return bool(self.runs) and all(r.complete for r in self.runs)

    def per_repeat(self, metric: str) -> dict[str, float]:
        """``{repeat: value}`` of the complete runs where ``metric`` is defined."""
        out = {}
        for r in self.runs:
            v = r.values.get(metric)
            if r.complete and v is not None and not math.isnan(float(v)):
                out[r.repeat] = float(v)
        return out

    def estimate(self, metric: str) -> Estimate:
        return t_interval(self.per_repeat(metric).values())


def method_label(strategy: str, memory: int, factors: Sequence[tuple[str, object]] = ()) -> str:
    """``contavsep (mem 1)``; with factors their values: ``contavsep (mem 1, coseparation)``."""
    return f"{strategy} ({', '.join([f'mem {memory}', *(str(v) for _, v in factors)])})"


def group_configurations(runs: Iterable[RunRecord]) -> list[Configuration]:
    """Runs grouped by configuration, in order of first appearance."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(r.config_id, []).append(r)
    return [
        Configuration(
            cid, rs[0].strategy, rs[0].memory, rs[0].params, tuple(sorted(rs, key=lambda r: r.repeat)), rs[0].factors
        )
        for cid, rs in groups.items()
    ]


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


@dataclass(frozen=True)
class MethodRow:
    """A method's best complete configuration and its paired comparisons."""

    rank: int
    configuration: Configuration
    estimates: Mapping[str, Estimate]
    vs_reference: (
        Estimate | None
    )  # paired difference to fine-tuning (same memory if it exists; fine-tuning: to no memory)
    reference: str  # that fine-tuning method's label ("" when none / itself)
    vs_next: Estimate | None  # paired difference to the method ranked just below (the runner-up for rank 1)
    next_method: str
    chosen_on: Estimate | None = None  # the selection value this configuration was chosen on (None: no choice made)

    @property
    def gap(self) -> float | None:
        """Published (test) mean minus the mean it was chosen on: how optimistic the choice was."""
        if self.chosen_on is None:
            return None
        return self.estimates[next(iter(self.estimates))].mean - self.chosen_on.mean


@dataclass(frozen=True)
class Comparison:
    metric: str
    mode: str
    rows: tuple[MethodRow, ...]
    configurations: tuple[Configuration, ...]
    columns: tuple[str, ...]  # metrics estimated per row (metric first)
    incomplete: tuple[Configuration, ...] = field(default=())
    select_by: str = ""  # the metric each method's configuration was chosen by ("" = metric itself)
    selection: str = ""  # what the choice was made on, in words (SELECTION_NOTES); shown with every table


def compare(
    configurations: Sequence[Configuration],
    metric: str,
    mode: str,
    columns: Sequence[str] = ("forgetting/sdr",),
    *,
    select_by: str = "",
    select_mode: str = "",
    chosen_on: Mapping[str, Estimate] | None = None,
    selection: str = "",
) -> Comparison:
    """Rank the methods by the mean ``metric`` of their best complete configuration, chosen by
    ``select_by`` (a validation value; default ``metric`` itself, which is optimistic when a
    method has several configurations); paired differences against fine-tuning and against the
    next method (see the module docstring).

    ``select_mode``: the direction of ``select_by`` (default ``mode``).
    ``chosen_on``: config id -> the estimate it was chosen on elsewhere (a confirmation stage's
    configurations were chosen on the search's validation runs); shown per row with the gap, and
    what a method with several confirmed configurations is chosen by.
    ``selection``: what the choice was made on, in words, carried to every table.
    """
    columns = tuple(dict.fromkeys((metric, *columns)))
    by, by_mode = select_by or metric, select_mode or mode
    chosen_on = chosen_on or {}

    def choice_value(c: Configuration) -> float:
        return chosen_on[c.config_id].mean if c.config_id in chosen_on else c.estimate(by).mean

    complete = [
        c
        for c in configurations
        if c.complete and c.per_repeat(metric) and (c.config_id in chosen_on or c.per_repeat(by))
    ]
    best: dict[str, Configuration] = {}
    for c in complete:
        current = best.get(c.method)
        if current is None or _better(choice_value(c), choice_value(current), by_mode):
            best[c.method] = c
    ranked = sorted(best.values(), key=lambda c: c.estimate(metric).mean, reverse=mode == "max")
    references = [c for c in ranked if c.strategy == REFERENCE_STRATEGY]
    rows = []
    for i, c in enumerate(ranked):
        # fine-tuning with the same memory (and the same factors: a separator is compared with
        # itself); fine-tuning itself against fine-tuning without memory
        peers = [r for r in references if r.factors == c.factors and r is not c]
        same = [r for r in peers if r.memory == c.memory]
        without = [r for r in peers if r.memory == 0]
        others = peers
        if c.strategy == REFERENCE_STRATEGY:
            reference = without[0] if without else None
        else:
            reference = same[0] if same else (others[0] if others else None)
        vs_ref = None if reference is None else paired_difference(c.per_repeat(metric), reference.per_repeat(metric))
        below = ranked[i + 1] if i + 1 < len(ranked) else None
        vs_next = None if below is None else paired_difference(c.per_repeat(metric), below.per_repeat(metric))
        rows.append(
            MethodRow(
                rank=i + 1,
                configuration=c,
                estimates={m: c.estimate(m) for m in columns},
                vs_reference=vs_ref,
                reference="" if reference is None else reference.method,  # vs_ref is None exactly when reference is
                vs_next=vs_next,
                next_method="" if below is None else below.method,
                chosen_on=chosen_on.get(c.config_id) or (c.estimate(select_by) if select_by else None),
            )
        )
    incomplete = tuple(c for c in configurations if not c.complete)
    return Comparison(metric, mode, tuple(rows), tuple(configurations), columns, incomplete, select_by, selection)


# Up to this many pairs, a difference also lists its per-pair values: with few runs the interval is
# wide (t quantile 12.7 at n = 2), and whether every pair agrees in sign is worth seeing.
SHOW_PAIRS_UP_TO = 4


def _diff_text(d: Estimate | None, mode: str) -> str:
    if d is None:
        return "-"
    if d.n < 2:
        return f"{d.mean:+.2f} (n={d.n})"
    text = f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] {d.verdict(mode)}"
    if d.n <= SHOW_PAIRS_UP_TO:
        text += " (pairs " + ", ".join(f"{v:+.2f}" for v in d.values) + ")"
    return text


def _params_text(params: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"


def _chosen(comparison: Comparison) -> bool:
    return any(r.chosen_on is not None for r in comparison.rows)


def ranking_table(comparison: Comparison, compact: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one per method, ranked; means ± 95 % CI half-width, the value each
    configuration was chosen on and the gap to it (when a choice was made), paired differences.

    ``compact``: the console's table (fits 120 columns): no per-pair values, no difference to
    the next method (the summary lines give the leader's), no parameters."""
    chosen = _chosen(comparison)
    if compact:  # the values' form (mean ± CI) and what "chosen on" reads are said above the table
        header = [
            "rank",
            "method",
            "runs",
            *comparison.columns,
            *(["chosen on", "gap"] if chosen else []),
            f"Δ{comparison.metric} vs fine-tuning",
        ]
    else:
        choice = [f"chosen on {comparison.select_by}", "gap"] if chosen else []
        header = [
            "rank",
            "method",
            "runs",
            *[f"{m} (mean ± 95% CI)" for m in comparison.columns],
            *choice,
            f"Δ{comparison.metric} vs fine-tuning [95% CI]",
            f"Δ{comparison.metric} vs next [95% CI]",
            "configuration",
        ]
    rows = []
    for r in comparison.rows:
        c = r.configuration
        cells = [
            str(r.rank),
            c.method,
            str(len(c.per_repeat(comparison.metric))),
            *[r.estimates[m].text() for m in comparison.columns],
        ]
        if chosen:
            cells += ["-" if r.chosen_on is None else r.chosen_on.text(), "-" if r.gap is None else f"{r.gap:+.2f}"]
        if compact:
            d = r.vs_reference
            cells.append(
                "-"
                if d is None
                else f"{d.mean:+.2f} (n={d.n})"
                if d.n < 2
                else f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}] {d.verdict(comparison.mode)}"
            )
        else:
            vs_ref = "-" if r.vs_reference is None else f"{_diff_text(r.vs_reference, comparison.mode)} ({r.reference})"
            vs_next = "-" if r.vs_next is None else f"{_diff_text(r.vs_next, comparison.mode)} ({r.next_method})"
            cells += [vs_ref, vs_next, _params_text(c.params)]
        rows.append(cells)
    return header, rows


def configurations_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows: every configuration with its runs' status and estimates (and the value
    each method's configuration is chosen by, next to them)."""
    columns = tuple(dict.fromkeys((*comparison.columns, *([comparison.select_by] if comparison.select_by else []))))
    header = [
        "configuration",
        "method",
        "runs (complete/all)",
        *[f"{m} (mean ± 95% CI)" for m in columns],
        "parameters",
    ]
    rows = []
    for c in comparison.configurations:
        done = sum(r.complete for r in c.runs)
        rows.append(
            [
                c.config_id,
                c.method,
                f"{done}/{len(c.runs)}",
                *[c.estimate(m).text() for m in columns],
                _params_text(c.params),
            ]
        )
    return header, rows


def summary_lines(comparison: Comparison) -> list[str]:
    """One-line conclusions: the leader against the runner-up, each method against fine-tuning."""
    if not comparison.rows:
        return ["no configuration completed all its runs: nothing to rank"]
    top = comparison.rows[0]
    lines = []
    if top.vs_next is not None:
        verdict = top.vs_next.verdict(comparison.mode)
        what = {
            "better": "ahead of",
            "worse": "behind",
            "within noise": "not distinguishable from",
            "n < 2": "unpaired with",
        }[verdict]
        lines.append(
            f"{top.configuration.method} is {what} the runner-up {top.next_method}: "
            f"Δ{comparison.metric} {_diff_text(top.vs_next, comparison.mode)} over {top.vs_next.n} paired run(s)"
        )
    for row in comparison.rows:
        if row.vs_reference is not None:
            lines.append(
                f"{row.configuration.method} vs {row.reference}: Δ{comparison.metric}"
                f" {_diff_text(row.vs_reference, comparison.mode)} over {row.vs_reference.n} paired run(s)"
            )
    return lines


def pareto_front(configurations: Sequence[Configuration], objectives: Sequence[tuple[str, str]]) -> list[Configuration]:
    """Complete configurations not dominated on the mean of every (metric, mode) objective."""
    points = []
    for c in configurations:
        if not c.complete:
            continue
        means = [c.estimate(m).mean for m, _ in objectives]
        if any(math.isnan(v) for v in means):
            continue
        points.append((c, [v if mode == "max" else -v for v, (_, mode) in zip(means, objectives)]))

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [c for c, p in points if not any(dominates(q, p) for _, q in points)]
