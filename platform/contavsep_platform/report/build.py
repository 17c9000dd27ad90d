"""Building the report of a sweep already read: ``report.md``, ``report.html`` and the PNG plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contavsep.suggest import did_you_mean
from contavsep_platform.artifacts import final_scores_figure, markdown_table, save_figure, strategy_curves_figure
from contavsep_platform.comparison import CONFIDENCE, compare, configurations_table, group_configurations, summary_lines
from contavsep_platform.errors import UserError
from contavsep_platform.report.labels import strategy_label
from contavsep_platform.report.markdown import _header_lines, _ranking_rows, _steps_done, _table1_lines, _with_n
from contavsep_platform.report.ranking import _default_mode, _record_of, _selection, run_records, step_estimates
from contavsep_platform.report.records import SweepRecord, TrialRecord, comparison_name
from contavsep_platform.report.space_file import space_info
from contavsep_platform.report.views import STEP_FILE, _pareto, _views
from contavsep_platform.report_html import HTML_FILE, write_html
from contavsep_platform.search_views import View
from contavsep_platform.spaces import publish_key, result_key

# Estimated for every ranked method (the sweep metric first, then these, then the objectives).
RANKING_COLUMNS = ("sdr", "sir", "sar", "forgetting/sdr", "bwt/sdr")


@dataclass(frozen=True)
class Report:
    markdown: str
    files: tuple[Path, ...]


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
        raise UserError(
            f"no complete run of sweep '{sweep.name}' logged '{metric}'{did_you_mean(metric, logged)};"
            f" values: {', '.join(logged)}"
        )
    objectives = tuple((publish_key(m), d) for m, d in space.objectives) if len(space.objectives) > 1 else ()
    columns = tuple(dict.fromkeys([*RANKING_COLUMNS, *(m for m, _ in objectives)]))
    configurations = group_configurations(table.records)
    select_by, chosen_on, selection = _selection(
        space, result_key(first), configurations, search_trials, confirm_trials, trials
    )
    comparison = compare(
        configurations,
        metric,
        mode,
        columns,
        select_by=select_by,
        select_mode=first_mode,
        chosen_on=chosen_on,
        selection=selection,
    )
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

    md += [
        "## Ranking (confirmed configuration per method)"
        if confirm_trials
        else "## Ranking (one configuration per method)",
        "",
    ]
    header, rows = _ranking_rows(comparison)
    if rows:
        chosen = (
            f" chosen by `{select_by}` (validation; the value it was chosen on and the gap to the published"
            f" mean are shown)"
            if select_by
            else ""
        )
        md += [
            f"**Selection: {selection}.**",
            "",
            f"Methods ({', '.join(('strategy', 'memory size', *space.factors))}) by the mean final `{metric}` ({mode})"
            f" of their configuration{chosen} that completed all its runs. Values: mean ± half-width of the"
            f" {CONFIDENCE:.0%} Student-t interval over the configuration's runs; `runs` = how many runs stand behind each"
            " mean. Δ: paired by seed and class order (run minus run on the same repeat), with the interval of those"
            " differences and how many pairs.",
            "",
        ]
        md.append(markdown_table(header, rows))
        md.append("")
    md += [f"- {line}" for line in summary_lines(comparison)]
    md.append(
        f"- A difference whose {CONFIDENCE:.0%} interval contains 0 is within the noise of the runs, not a win"
        " or a loss; one without an interval (a single pair) says nothing about the noise."
    )
    if rows:
        best = [r.configuration for r in comparison.rows]
        estimates = [{m: c.estimate(m) for m in ("sdr", "sir", "sar")} for c in best]
        files.append(
            save_figure(
                final_scores_figure(
                    [(c.method, e["sdr"].mean, e["sir"].mean, e["sar"].mean) for c, e in zip(best, estimates)],
                    errors=[(e["sdr"].half_width, e["sir"].half_width, e["sar"].half_width) for e in estimates],
                    title=f"Best configuration per method: final scores (mean ± {CONFIDENCE:.0%} CI)",
                ),
                out / "final_scores.png",
            )
        )
        md += ["", "![final scores](final_scores.png)"]
    md.append("")

    md += _table1_lines(comparison, model_of, metric, mode) + [""]

    md += ["## Configurations of the search" if confirm_trials else "## Configurations", ""]
    if search.configurations:
        header, rows = configurations_table(search)
        md += [
            "Every configuration with how many of its runs completed; a configuration counts in the ranking only"
            " when all its runs completed."
            + (" The ranking above comes from the confirmation runs, not these." if confirm_trials else ""),
            "",
            markdown_table(header, rows),
        ]
    else:
        md.append("No runs logged.")
    md.append("")

    md += [
        f"## SDR over all seen classes after each step (best configuration per method, mean ± {CONFIDENCE:.0%} CI (n))",
        "",
    ]
    per_step = {
        r.configuration.method: step_estimates(
            [histories.get(run.run_id, []) for run in r.configuration.runs if run.complete]
        )
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

    pareto_view = View(
        "Pareto front",
        None,
        f"Not drawn: the space has a single objective ({metric}); a Pareto front needs two (space `objectives`).",
    )
    if objectives:
        lines, figure = _pareto(comparison, objectives, out)
        md += lines + [""]
        if figure is not None:
            files.append(figure)
        pareto_view = View(
            lines[0].removeprefix("## "),
            figure,
            f"Means with {CONFIDENCE:.0%} CI bars of the first two objectives; front members marked."
            if figure
            else f"Not drawn: {' '.join(lines[2:])}",
        )

    views = _views(comparison, space, metric, mode, per_step, out, pareto_view, trials, r_document, search)
    files += [v.file for v in views if v.file is not None and v.file not in files]
    md += ["## Views of the search", "", f"The page [{HTML_FILE}]({HTML_FILE}) shows them together.", ""]
    for view in views:
        md.append(f"- **{view.title}**: " + (f"[{view.file.name}]({view.file.name})" if view.file else view.caption))
        md += [f"  - {finding}" for finding in view.findings]
    md.append("")

    md += ["## All runs", ""]
    if trials:
        header = [
            "run",
            "stage",
            "configuration",
            "repeat",
            "method",
            "status",
            "steps done",
            "final SDR",
            "forgetting SDR",
        ]
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
            run_rows.append(
                [
                    t.name,
                    t.stage,
                    record.config_id,
                    record.repeat,
                    method_of(t),
                    status,
                    _steps_done(histories.get(t.run_id, [])),
                    t.final("sdr"),
                    t.final("forgetting/sdr"),
                ]
            )
        for t in search_trials if confirm_trials else ():  # what chose the confirmed configurations
            run_rows.append(
                [
                    t.name,
                    t.stage,
                    t.config_id,
                    t.repeat,
                    method_of(t),
                    "complete" if t.complete else t.status,
                    _steps_done(histories.get(t.run_id, [])),
                    t.final("sdr"),
                    t.final("forgetting/sdr"),
                ]
            )
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
