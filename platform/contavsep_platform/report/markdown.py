"""The report's markdown pieces: the header, the ranking rows, the Table-1-style table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from contavsep_platform.artifacts import markdown_table
from contavsep_platform.comparison import CONFIDENCE, Comparison, Estimate, compare, ranking_table
from contavsep_platform.report.labels import MODEL_LABELS, _model_order, strategy_label, strategy_order
from contavsep_platform.report.ranking import RunTable
from contavsep_platform.report.records import SweepRecord
from contavsep_platform.report.space_file import SpaceInfo
from contavsep_platform.tracking import ROLE_TAG, SWEEP_TAG


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


def _header_lines(
    sweep: SweepRecord, table: RunTable, comparison: Comparison, space: SpaceInfo, metric: str, mode: str
) -> list[str]:
    runs = len(sweep.trials)
    complete = sum(t.complete for t in sweep.trials)
    configs = comparison.configurations
    lines = [
        f"{runs} runs: {complete} complete, {runs - complete} stopped early, failed or running."
        f" Sweep run status: {sweep.status}.  ",
        f"Selection: {comparison.selection}.  ",
    ]
    if configs:
        sizes = sorted({len(c.runs) for c in configs})
        per = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]} to {sizes[-1]}"
        ranked = sum(c.complete for c in configs)
        lines.append(
            f"{len(configs)} configurations with {per} repeat(s) (seed x class order) each: {ranked} completed all"
            f" their runs, {len(comparison.incomplete)} did not (not ranked).  "
        )
    if space.seeds is not None:
        lines.append(
            f"The space asks for {space.seeds} seed(s) x {space.class_orders} class order(s) per configuration.  "
        )
    if table.duplicates:
        lines.append(
            f"{len(table.duplicates)} run(s) repeat another run's configuration and repeat and are not counted.  "
        )
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


def _table1_lines(comparison: Comparison, model_of: Mapping[str, str], metric: str, mode: str) -> list[str]:
    """Rows: strategies; column groups: separator x with/without memory; a cell: the ranking's
    configuration of the cell's method (chosen as the ranking chose it, never on the numbers
    shown; a cell holding several memory sizes shows the best of those methods by ``metric``)."""
    lines = [f"## Table 1 style: SDR / SIR / SAR after the last step (dB, mean ± {CONFIDENCE:.0%} CI (n))", ""]
    complete = [r.configuration for r in comparison.rows]
    groups = sorted(
        {(model_of[c.config_id], c.memory > 0) for c in complete}, key=lambda g: (*_model_order(g[0]), g[1])
    )
    if not groups:
        return lines + ["No configuration completed all its runs."]
    header = ["method"]
    for model, memory in groups:
        header += [f"{MODEL_LABELS.get(model, model)} {'w/' if memory else 'w/o'} memory SDR", "SIR", "SAR"]
    rows = []
    for name in strategy_order([c.strategy for c in complete]):
        row: list[object] = [strategy_label(name)]
        for model, memory in groups:
            cell = [
                c
                for c in complete
                if c.strategy == name and model_of[c.config_id] == model and (c.memory > 0) == memory
            ]
            ranked = compare(cell, metric, mode, ("sir", "sar")).rows if cell else ()
            best = ranked[0].configuration if ranked else None
            row += [_with_n(best.estimate(m)) if best else None for m in ("sdr", "sir", "sar")]
        rows.append(row)
    return lines + [markdown_table(header, rows)]
