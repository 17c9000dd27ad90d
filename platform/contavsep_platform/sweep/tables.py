"""A sweep's outcome as tables: the trials and the ranking on the console, the ranking as
markdown (parent-run artifact), the errored trials, and the final console."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from contavsep_platform.comparison import configurations_table, ranking_table, summary_lines
from contavsep_platform.spaces import STRATEGY_KEY
from contavsep_platform.sweep.outcome import SweepOutcome


def _fmt(x: Any) -> str:
    """A metric: two decimals (dB)."""
    return "-" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def _fmt_param(x: Any) -> str:
    """A sampled parameter: four significant digits (λ values span decades)."""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def format_trials_table(outcome: SweepOutcome) -> str:
    rows = [
        ["trial", "configuration", "repeat", "strategy", "status", "steps", outcome.metric, "forgetting", "parameters"]
    ]
    for r in sorted(outcome.trials, key=lambda r: (r.group, r.repeat, r.trial_id)):
        params = ", ".join(f"{k}={_fmt_param(v)}" for k, v in r.params.items() if k != STRATEGY_KEY)
        rows.append(
            [
                r.trial_id,
                r.group,
                r.repeat or "-",
                r.strategy,
                r.status,
                str(r.steps),
                _fmt(r.value(outcome.metric)),
                _fmt(r.value("forgetting/sdr")),
                params or "-",
            ]
        )
    return _table(rows)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt_param(v)}" for k, v in params.items())


def format_ranking(outcome: SweepOutcome) -> str:
    """The ranking of methods (best complete configuration each) with CIs and paired differences."""
    header, rows = ranking_table(outcome.comparison, compact=True)
    lines = [_table([header, *rows])] if rows else []
    # the configurations' parameters under the table (it keeps to 120 columns without them)
    lines += [
        f"  {r.configuration.method}: {_params(r.configuration.params)}"
        for r in outcome.comparison.rows
        if r.configuration.params
    ]
    lines += summary_lines(outcome.comparison)
    return "\n".join(lines)


def ranking_markdown(outcome: SweepOutcome) -> str:
    """The ranking and configurations tables as markdown (parent-run artifact)."""
    from contavsep_platform.artifacts import markdown_table

    parts = [
        f"# Sweep {outcome.name}: test {outcome.metric} ({outcome.mode})",
        "",
        f"**Selection: {outcome.selection}.**",
        "",
        "Means over each configuration's runs (seeds x class orders) with 95 % Student-t intervals;"
        " differences are paired by seed and class order. A difference whose interval contains 0 is within the noise.",
        "",
    ]
    header, rows = ranking_table(outcome.comparison)
    if rows:
        title = "confirmed configuration per method" if outcome.confirmed else "one configuration per method"
        parts += [f"## Ranking ({title})", "", markdown_table(header, rows), ""]
        parts += [f"- {line}" for line in summary_lines(outcome.comparison)] + [""]
    header, rows = configurations_table(outcome.search or outcome.comparison)
    parts += [
        "## Configurations of the search" if outcome.confirmed else "## Configurations",
        "",
        markdown_table(header, rows),
        "",
    ]
    if outcome.pareto:
        parts += [
            f"## Pareto front ({', '.join(f'{m} {d}' for m, d in outcome.objectives)})",
            "",
            ", ".join(outcome.pareto),
            "",
        ]
    return "\n".join(parts)


def error_lines(outcome: SweepOutcome) -> list[str]:
    """One line per errored trial: its id, how far it got, the error, where the full log is."""
    return [
        f"trial {r.trial_id} ({r.strategy}) failed after {r.steps} step(s): {r.error}; log: {r.error_log or outcome.sweep_uri}"
        for r in outcome.errored
    ]


def print_outcome(outcome: SweepOutcome, out: Any = None, trials_table: bool = True) -> None:
    """The sweep's final console: the trials (unless ``trials_table`` is off: the demo's live
    table showed each already), the ranking, notes and how to resume."""
    out = out or sys.stdout
    configurations = len((outcome.search or outcome.comparison).configurations)
    stages = " (search and confirmation)" if outcome.confirmed else ""
    print(
        f"\nsweep {outcome.name}: {len(outcome.trials)} trials{stages} of {configurations} configuration(s)"
        f" in {outcome.wall_seconds:.0f} s (at most {outcome.max_concurrent} at once); results under {outcome.sweep_uri}",
        file=out,
    )
    if trials_table:
        print(format_trials_table(outcome), file=out)
    chosen = (
        f"; chosen on = the {outcome.comparison.select_by} it was chosen by, gap = test minus that"
        if any(r.chosen_on is not None for r in outcome.comparison.rows)
        else ""
    )
    print(
        f"\nranking by final test {outcome.metric} ({outcome.mode}; mean ± 95% CI half-width over each method's runs;"
        f" Δ paired by seed and class order{chosen})\nselection: {outcome.selection}",
        file=out,
    )
    print(format_ranking(outcome) or "no configuration completed all its runs", file=out)
    if outcome.objectives:
        header, rows = configurations_table(outcome.comparison)
        marked = [[*row, "yes" if row[0] in outcome.pareto else ""] for row in rows]
        print(
            f"\nconfigurations ({', '.join(f'{m} {d}' for m, d in outcome.objectives)}; Pareto = not dominated on the means):",
            file=out,
        )
        print(_table([[*header, "Pareto"], *marked]), file=out)
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    errored = outcome.errored
    if outcome.interrupted or errored:
        what = "was interrupted" if outcome.interrupted else "has errored trials"
        print(
            f"\nthe sweep {what}; continue it with: contavsep sweep SPACE.yaml --name {outcome.name} --resume"
            + (" (errored trials restart from their last intact step checkpoint)" if errored else ""),
            file=out,
        )
