"""The report's views of the search (importance, parallel coordinates, step curves, Pareto front, R
matrices) and its Pareto-front section."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from contavsep_platform.artifacts import markdown_table, pareto_figure, save_figure
from contavsep_platform.comparison import CONFIDENCE, Comparison, Estimate, pareto_front
from contavsep_platform.report.labels import _objective_label, strategy_order
from contavsep_platform.report.markdown import _with_n
from contavsep_platform.report.records import TrialRecord
from contavsep_platform.report.space_file import SpaceInfo
from contavsep_platform.search_views import View, importance_view, parallel_coordinates_view, r_matrices_view
from contavsep_platform.spaces import publish_key

PARETO_FILE = "pareto.png"
STEP_FILE = "step_sdr.png"


def _views(
    comparison: Comparison,
    space: SpaceInfo,
    metric: str,
    mode: str,
    per_step: Mapping[str, Sequence[tuple[int, Estimate]]],
    out: Path,
    pareto_view: View,
    trials: Sequence[TrialRecord],
    r_document: Callable[[str], Mapping[str, Any] | None] | None,
    search: Comparison | None = None,
) -> list[View]:
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
        caption = (
            f"Shaded: the {CONFIDENCE:.0%} t-interval over each configuration's repeats."
            if most > 1
            else "One run per configuration: no interval (a space with `repeats` draws the bands)."
        )
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
        run = max(
            (r for r in c.runs if r.repeat in values),
            key=lambda r: values[r.repeat] * (1 if mode == "max" else -1),
            default=None,
        )
        if run is not None:
            label = f"{name_of.get(run.run_id, run.run_id)} ({c.method}, {metric} {values[run.repeat]:.2f})"
            best_runs[c.strategy] = (label, r_document(run.run_id) if r_document else None)
    views.append(r_matrices_view({s: best_runs[s] for s in strategy_order(list(best_runs))}, out))
    return views


def _pareto(comparison: Comparison, objectives: Sequence[tuple[str, str]], out: Path) -> tuple[list[str], Path | None]:
    names = ", ".join(f"{m} {d}" for m, d in objectives)
    lines = [f"## Pareto front ({names})", ""]
    first, direction = objectives[0]
    front = sorted(
        pareto_front(comparison.configurations, objectives),  # best on the first objective first
        key=lambda c: c.estimate(first).mean,
        reverse=direction == "max",
    )
    if not front:
        return lines + ["No configuration completed all its runs with every objective defined."], None
    lines += [
        f"Configurations that no other complete configuration beats on the means of all objectives. Means carry"
        f" their {CONFIDENCE:.0%} intervals: front members whose intervals overlap are not told apart by these runs.",
        "",
    ]
    header = [
        "configuration",
        "method",
        *[f"{m} (mean ± {CONFIDENCE:.0%} CI (n))" for m, _ in objectives],
        "parameters",
    ]
    rows = [
        [
            c.config_id,
            c.method,
            *[_with_n(c.estimate(m)) for m, _ in objectives],
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.params.items()) or "-",
        ]
        for c in front
    ]
    lines.append(markdown_table(header, rows))
    (mx, dx), (my, dy) = objectives[0], objectives[1]
    on_front = {c.config_id for c in front}
    points = []
    for c in comparison.configurations:
        ex, ey = c.estimate(mx), c.estimate(my)
        if c.complete and not math.isnan(ex.mean) and not math.isnan(ey.mean):
            points.append(
                (f"{c.config_id} {c.method}", ex.mean, ex.half_width, ey.mean, ey.half_width, c.config_id in on_front)
            )
    path = save_figure(pareto_figure(points, _objective_label(mx, dx), _objective_label(my, dy)), out / PARETO_FILE)
    lines += ["", f"![Pareto front]({PARETO_FILE}) (first two objectives; bars: {CONFIDENCE:.0%} CI)"]
    return lines, path
