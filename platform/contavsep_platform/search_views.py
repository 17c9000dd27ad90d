"""Views of a search: which hyperparameters mattered, how the searched keys trade SDR against
forgetting, and what the best run of each strategy learned and forgot.

Every view is drawn from the sweep's configurations (:class:`~contavsep_platform.comparison.Configuration`:
the mean of each final value over a configuration's repeats), the same numbers the report ranks:

- **hyperparameter importance**: Optuna's fANOVA evaluator (a random forest over the searched
  values, the variance of each objective each key explains) on an in-memory Optuna study with
  one trial per complete configuration; one panel per strategy (a strategy's keys exist only
  for it: a conditional space has no key common to all), and one across strategies over the
  strategy, the memory size and any key they share. A panel needs >= 2 searched keys (one key explains everything by construction)
  and >= 3 complete configurations (fANOVA on two points says nothing).
- **parallel coordinates**: one line per complete configuration through the strategy, every
  searched key and the final objectives, coloured by the first objective; a key a strategy
  does not have leaves a gap in its lines.
- **R matrices side by side**: the SDR matrix ``R[i][j]`` (after step i, on task j) of the best
  run of each strategy's best configuration, on one colour scale.

A view that does not apply returns a :class:`View` without a file and with the reason, which
the report page shows instead of an image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from contavsep_platform.artifacts import save_figure
from contavsep_platform.comparison import Comparison, Configuration

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

IMPORTANCE_FILE = "importance.png"
PARALLEL_FILE = "parallel_coordinates.png"
R_MATRICES_FILE = "r_matrices.png"
# Fewest complete configurations an importance panel stands on (fANOVA fits a forest to them).
MIN_IMPORTANCE_CONFIGURATIONS = 3
# A float key whose values span more than this ratio is read on a log axis (λ values span decades).
LOG_SPAN = 20.0
STRATEGY_AXIS = "strategy"
# Every configuration has a memory size (a method is a strategy with one), searched or fixed.
MEMORY_KEY = "memory.per_class"


@dataclass(frozen=True)
class View:
    """One view of the search: a PNG, or the reason it does not apply."""

    title: str
    file: Path | None  # the PNG (None: does not apply)
    caption: str  # what it shows, or why it is missing
    findings: tuple[str, ...] = ()  # what it says, in words (e.g. the most important key per panel)


def _objective_label(metric: str, mode: str) -> str:
    return f"final {metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def _complete(comparison: Comparison, objectives: Sequence[tuple[str, str]]) -> list[Configuration]:
    """Complete configurations with every objective defined."""
    return [
        c
        for c in comparison.configurations
        if c.complete and all(not math.isnan(c.estimate(m).mean) for m, _ in objectives)
    ]


def _value(c: Configuration, key: str) -> object:
    """A configuration's value of a view's key: its strategy, its memory size, or a searched key
    (None where the strategy has no such key)."""
    if key == STRATEGY_AXIS:
        return c.strategy
    if key == MEMORY_KEY:
        return c.memory
    return c.params.get(key)


def _varying(configs: Sequence[Configuration], key: str) -> bool:
    return len({str(_value(c, key)) for c in configs}) > 1


def _numeric(values: Sequence[object]) -> TypeGuard[Sequence[int | float]]:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


# ---------------------------------------------------------------------------- importance


def _distribution(values: Sequence[object]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if _numeric(values):
        lo, hi = float(min(values)), float(max(values))
        return FloatDistribution(lo, hi, log=lo > 0 and hi / lo > LOG_SPAN)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def _objective_value(i: int) -> Callable[[FrozenTrial], float]:
    """Optuna's importance target for the ``i``-th objective of a multi-objective trial."""
    return lambda t: t.values[i]


def _importances(
    configs: Sequence[Configuration], keys: Sequence[str], objectives: Sequence[tuple[str, str]]
) -> list[dict[str, float]]:
    """fANOVA importance of ``keys`` for each objective, over one Optuna trial per configuration."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import create_trial

    distributions = {k: _distribution([_value(c, k) for c in configs]) for k in keys}
    trials = []
    for c in configs:
        params = {k: _value(c, k) if _numeric([_value(c, k)]) else str(_value(c, k)) for k in keys}
        trials.append(
            create_trial(params=params, distributions=distributions, values=[c.estimate(m).mean for m, _ in objectives])
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize" if mode == "max" else "minimize" for _, mode in objectives])
    study.add_trials(trials)
    out = []
    for i in range(len(objectives)):
        scores = get_param_importances(
            study,
            evaluator=FanovaImportanceEvaluator(seed=0),
            params=list(keys),
            target=_objective_value(i),
            normalize=True,
        )
        out.append({k: float(scores.get(k, 0.0)) for k in keys})
    return out


def importance_panels(
    comparison: Comparison, objectives: Sequence[tuple[str, str]]
) -> tuple[list[tuple[str, list[str], list[dict[str, float]]]], list[str]]:
    """``([(panel title, keys, importance per objective)], [why a panel is missing])``."""
    configs = _complete(comparison, objectives)
    panels: list[tuple[str, list[str], list[dict[str, float]]]] = []
    missing: list[str] = []
    strategies = list(dict.fromkeys(c.strategy for c in configs))
    # Across strategies: the strategy, the memory size and the keys every configuration has.
    shared = set.intersection(*(set(c.params) for c in configs)) | {MEMORY_KEY} if configs else set()
    across = [STRATEGY_AXIS] + sorted(k for k in shared if _varying(configs, k))
    groups = [("all strategies", configs, across)] if len(strategies) > 1 else []
    for name in strategies:
        members = [c for c in configs if c.strategy == name]
        keys = sorted(
            k
            for k in set().union(*(c.params for c in members))
            if all(k in c.params for c in members) and _varying(members, k)
        )
        groups.append((name, members, keys))
    for title, members, keys in groups:
        if len(keys) < 2:
            missing.append(
                f"{title}: {len(keys)} searched key(s) vary ({', '.join(keys) or 'none'}); importance needs"
                " at least 2 (one key explains all the variance by construction)"
            )
        elif len(members) < MIN_IMPORTANCE_CONFIGURATIONS:
            missing.append(
                f"{title}: {len(members)} complete configuration(s); importance needs at least"
                f" {MIN_IMPORTANCE_CONFIGURATIONS}"
            )
        else:
            panels.append((title, keys, _importances(members, keys, objectives)))
    return panels, missing


def _determines(configs: Sequence[Configuration], a: str, b: str) -> bool:
    """Whether each value of key ``a`` comes with one value of ``b`` only (``b`` nested in ``a``,
    e.g. a memory size fixed per strategy): fANOVA then splits one effect between the two."""
    pairs = {(str(_value(c, a)), str(_value(c, b))) for c in configs}
    levels = {p[0] for p in pairs}
    # Only a key whose values repeat says something: a value seen once "determines" everything.
    return len(levels) < len(configs) and len(pairs) == len(levels)


def importance_view(comparison: Comparison, objectives: Sequence[tuple[str, str]], out: Path) -> View:
    """Bar charts of fANOVA importance: one row per panel, one column per objective."""
    title = "Hyperparameter importance (Optuna fANOVA)"
    panels, missing = importance_panels(comparison, objectives)
    why = "; ".join(missing)
    if not panels:
        return View(title, None, f"Not drawn: {why or 'no complete configuration'}.")
    configs = _complete(comparison, objectives)
    fig = Figure(figsize=(4.8 * len(objectives), 0.6 + 2.0 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(objectives), squeeze=False)
    findings = []
    for row, (name, keys, scores) in enumerate(panels):
        for col, ((metric, mode), score) in enumerate(zip(objectives, scores)):
            ax = axes[row][col]
            order = sorted(keys, key=lambda k: score[k])
            ax.barh(order, [score[k] for k in order], color="tab:blue")
            ax.set_xlim(0, 1)
            ax.set_title(f"{name}: {_objective_label(metric, mode)}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.set_xlabel("share of variance explained")
            top = order[-1]
            findings.append(
                f"{name}, {metric}: {top} explains {score[top]:.0%}"
                f" ({', '.join(f'{k} {score[k]:.0%}' for k in reversed(order[:-1]))})"
            )
        members = [c for c in configs if name == "all strategies" or c.strategy == name]
        findings += [
            f"{name}: {b} follows from {a} in these configurations (one {b} per {a}): their shares are not separable"
            for a in keys
            for b in keys
            if a != b and _determines(members, a, b) and not (a > b and _determines(members, b, a))
        ]
    path = save_figure(fig, out / IMPORTANCE_FILE)
    caption = (
        "Share of each objective's variance over the complete configurations (means over their repeats) that"
        " each searched key explains, fANOVA (Optuna's FanovaImportanceEvaluator, seed 0)."
    )
    if why:
        caption += f" Not drawn: {why}."
    return View(title, path, caption, tuple(findings))


# ---------------------------------------------------------------------------- parallel coordinates


def parallel_coordinates_view(comparison: Comparison, objectives: Sequence[tuple[str, str]], out: Path) -> View:
    """The searched keys and the final objectives as parallel axes, a line per configuration."""
    title = "Parallel coordinates: searched keys vs final objectives"
    configs = _complete(comparison, objectives)
    keys = sorted(k for k in {MEMORY_KEY}.union(*(c.params for c in configs)) if _varying(configs, k))
    if len(configs) < 2 or not keys:
        return View(
            title,
            None,
            f"Not drawn: {len(configs)} complete configuration(s) and {len(keys)} searched key(s)"
            " that vary; the view needs at least 2 configurations and 1 key.",
        )
    strategies = list(dict.fromkeys(c.strategy for c in configs))
    axes_names = [STRATEGY_AXIS, *keys, *(m for m, _ in objectives)]

    def raw(c: Configuration, name: str) -> object:
        return _value(c, name) if name == STRATEGY_AXIS or name in keys else c.estimate(name).mean

    columns: list[tuple[np.ndarray, list[str], list[float]]] = []  # (positions in [0, 1], tick labels, tick positions)
    for name in axes_names:
        values = [raw(c, name) for c in configs]
        present = [v for v in values if v is not None]
        if name == STRATEGY_AXIS or not _numeric(present):
            levels = strategies if name == STRATEGY_AXIS else sorted({str(v) for v in present})
            step = 1 / max(len(levels) - 1, 1)
            pos = np.array([levels.index(str(v)) * step if v is not None else np.nan for v in values], dtype=float)
            columns.append((pos, levels, [i * step for i in range(len(levels))]))
            continue
        # _numeric(present): every value that is not None is an int or a float.
        x = np.array([float(v) if isinstance(v, (int, float)) else np.nan for v in values])
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        log = lo > 0 and hi / lo > LOG_SPAN
        t = np.log10(x) if log else x
        tlo, thi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        span = thi - tlo if thi > tlo else 1.0
        columns.append(((t - tlo) / span, [f"{lo:.3g}", f"{hi:.3g}" + (" (log)" if log else "")], [0.0, 1.0]))

    first, mode = objectives[0]
    colour = np.array([c.estimate(first).mean for c in configs])
    norm = (colour - colour.min()) / (np.ptp(colour) or 1.0)
    fig = Figure(figsize=(max(6.0, 1.6 * len(axes_names)), 4.2), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    xs = np.arange(len(axes_names))  # one axis per column, at x = 0, 1, ...
    for i in range(len(configs)):
        ys = np.array([col[0][i] for col in columns])
        ax.plot(
            xs,
            ys,
            color=cmap(norm[i] if mode == "max" else 1 - norm[i]),
            alpha=0.8,
            linewidth=1.5,
            marker="o",
            markersize=3,
        )
    for axis_x, (_, labels, ticks) in enumerate(columns):
        ax.axvline(axis_x, color="0.6", linewidth=0.8)
        for label, y in zip(labels, ticks):
            ax.text(axis_x + 0.03, y, label, fontsize=7, va="center")
    ax.set_xticks(xs, axes_names, rotation=20, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"{len(configs)} complete configurations; colour: final {first} (bright = better)", fontsize=9)
    best = configs[int(np.argmax(colour) if mode == "max" else np.argmin(colour))]
    finding = (
        f"best final {first}: {best.method} with "
        + (", ".join(f"{k}={_short(best.params[k])}" for k in keys if k in best.params) or "its defaults")
        + f" ({best.estimate(first).text()})"
    )
    path = save_figure(fig, out / PARALLEL_FILE)
    caption = (
        "One line per complete configuration (means over its repeats) through the strategy, each searched key"
        " (min and max marked; a gap where a strategy has no such key) and the final objectives."
    )
    return View(title, path, caption, (finding,))


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------- R matrices


def r_matrices_view(
    best_runs: Mapping[str, tuple[str, Mapping[str, Any] | None]], out: Path, metric: str = "sdr"
) -> View:
    """``best_runs[strategy] = (run label, R.json document or None)``: the ``metric`` R matrix of
    each strategy's best run side by side, one colour scale."""
    title = f"R matrices ({metric.upper()}) of each strategy's best run"
    matrices = {}
    missing = []
    for strategy, (label, doc) in best_runs.items():
        r = (doc or {}).get("R", {}).get(metric) if isinstance(doc, Mapping) else None
        if r:
            matrices[f"{strategy}\n{label}"] = np.array([[np.nan if v is None else float(v) for v in row] for row in r])
        else:
            missing.append(f"{strategy} ({label}: no results/R.json)")
    if not matrices:
        why = "; ".join(missing) or "no strategy has a complete configuration"
        return View(title, None, f"Not drawn: {why}.")
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    fig = Figure(figsize=(3.4 * len(matrices) + 0.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    findings = []
    for ax, (label, r) in zip(axes, matrices.items()):
        image = ax.imshow(np.ma.masked_invalid(r), cmap="viridis", vmin=lo, vmax=hi)
        steps = r.shape[0]
        for i in range(steps):
            for j in range(r.shape[1]):
                if np.isfinite(r[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{r[i, j]:.1f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if (r[i, j] - lo) / (hi - lo) < 0.6 else "black",
                    )
        ax.set_xticks(range(r.shape[1]), [str(j + 1) for j in range(r.shape[1])])
        ax.set_yticks(range(steps), [str(i + 1) for i in range(steps)])
        ax.set_xlabel("task j")
        ax.set_ylabel("after step i")
        ax.set_title(label, fontsize=8)
        first_task = r[:, 0]
        seen = first_task[np.isfinite(first_task)]
        if seen.size > 1:
            findings.append(
                f"{label.splitlines()[0]}: task 1 {seen[0]:.2f} dB after step 1, {seen[-1]:.2f} dB after the"
                f" last step ({seen[-1] - seen[0]:+.2f})"
            )
    assert image is not None  # matrices is not empty, so the loop drew at least one
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=f"{metric.upper()} (dB)")
    caption = (
        "R[i][j]: mean score after step i on the classes of task j, of the best run (highest final value) of"
        " each strategy's best configuration; below the diagonal is what it kept of earlier tasks. Runs: "
        + "; ".join(label.replace("\n", ": ") for label in matrices)
        + "."
    )
    if missing:
        caption += f" Missing: {'; '.join(missing)}."
    return View(title, save_figure(fig, out / R_MATRICES_FILE), caption, tuple(findings))
