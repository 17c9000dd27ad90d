"""Files that show a trial to a person: PNG plots of its results and WAVs of its separations.

Everything here is pure: numbers in, files (or a :class:`matplotlib.figure.Figure`) out. The
tracker uploads the files to MLflow, the report reuses the plots. Figures are built on
``matplotlib.figure.Figure`` directly, never through ``pyplot``: pyplot keeps global figure
state and picks a GUI backend, neither of which belongs in a Ray worker. ``Figure.savefig``
renders PNG with the Agg canvas without selecting a backend for the process.

Inputs are the engine's own structures: a :class:`contavsep.engine.Example` (one separated
test mixture) and a results summary (``contavsep.metrics.ContinualResults.summary()``: R
matrices, per-step rows, forgetting, BWT).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:  # the report draws plots without importing torch through the engine
    from contavsep.engine import Example

METRIC_LABELS = {"sdr": "SDR", "sir": "SIR", "sar": "SAR"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (class names may hold spaces or slashes)."""
    return _UNSAFE.sub("_", text).strip("_") or "unnamed"


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    return out


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        # dB scores read best with 2 decimals; tiny weights (1e-4) must not print as 0.00.
        return f"{value:.2f}" if value == 0 or 0.01 <= abs(value) < 1e5 else f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; floats with 2 decimals (3 significant digits when
    tiny or huge), None/NaN as '-'."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- examples


def log_magnitude_spectrogram(
    wave: np.ndarray, n_fft: int = 512, hop: int = 128, floor_db: float = -80.0
) -> np.ndarray:
    """Hann-windowed STFT magnitude in dB re. full scale, for display only.

    A sine of amplitude 1 at a bin centre reads 0 dB. Values below ``floor_db`` are clipped so
    silence does not stretch the colour scale.

    Shape:
        - wave: :math:`(S,)`
        - output: :math:`(n\\_fft // 2 + 1, frames)` with ``frames = 1 + max(S - n_fft, 0) // hop``
    """
    x = np.asarray(wave, dtype=np.float64).ravel()
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    spectrum = np.fft.rfft(x[index] * window, axis=-1)
    # 2 / sum(window) turns the one-sided magnitude of a unit sine into 1.
    magnitude = np.abs(spectrum).T * (2.0 / window.sum())
    return np.maximum(20.0 * np.log10(np.maximum(magnitude, 1e-12)), floor_db)


def example_spectrogram_figure(example: Example, n_fft: int = 512, hop: int = 128) -> Figure:
    """Mixture on top, then one row per source: reference (left) and estimate (right)."""
    n_src = example.references.shape[0]
    fig = Figure(figsize=(9, 2.2 * (n_src + 1)), layout="constrained")
    axes = fig.subplots(n_src + 1, 2, squeeze=False)
    sr = example.sample_rate
    duration = example.mixture.shape[-1] / sr

    def show(ax: Any, wave: np.ndarray, title: str) -> Any:
        spec = log_magnitude_spectrogram(wave, n_fft, hop)
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=-80.0,
            vmax=0.0,
            extent=(0.0, duration, 0.0, sr / 2000.0),
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("kHz", fontsize=8)
        return image

    image = show(axes[0, 0], example.mixture, "mixture")
    axes[0, 1].axis("off")
    for n in range(n_src):
        name = example.class_names[n] if n < len(example.class_names) else f"source {n}"
        sdr = example.sdr[n] if n < len(example.sdr) else math.nan
        show(axes[n + 1, 0], example.references[n], f"{name}: reference")
        show(axes[n + 1, 1], example.estimates[n], f"{name}: estimate (SDR {sdr:.2f} dB)")
    for ax in axes[-1]:
        ax.set_xlabel("s", fontsize=8)
    fig.colorbar(image, ax=axes[:, 1].tolist(), label="dB", shrink=0.6)
    return fig


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    import soundfile

    x = np.asarray(wave, dtype=np.float32).ravel()
    peak = float(np.abs(x).max()) if x.size else 0.0
    # 16-bit PCM plays everywhere; an estimate may exceed full scale (a sigmoid mask times the
    # mixture cannot, but the iSTFT overlap can), so such a file is scaled down, never clipped.
    if peak > 1.0:
        x = x / peak
    soundfile.write(str(path), x, sample_rate, subtype="PCM_16")
    return path


def write_example(example: Example, directory: str | Path) -> list[Path]:
    """Write one separated mixture as WAVs and a spectrogram PNG into ``directory``.

    Files: ``mixture.wav``, ``<n>_<class>_reference.wav``, ``<n>_<class>_estimate.wav`` per
    source and ``spectrograms.png``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sr = int(example.sample_rate)
    written = [_write_wav(out / "mixture.wav", example.mixture, sr)]
    for n in range(example.references.shape[0]):
        stem = f"{n}_{safe_name(example.class_names[n]) if n < len(example.class_names) else 'source'}"
        written.append(_write_wav(out / f"{stem}_reference.wav", example.references[n], sr))
        written.append(_write_wav(out / f"{stem}_estimate.wav", example.estimates[n], sr))
    written.append(save_figure(example_spectrogram_figure(example), out / "spectrograms.png"))
    return written


def example_dirname(index: int, example: Example) -> str:
    """``<index>_<classA>+<classB>``: a readable, unique folder name for an example."""
    return f"{index}_" + "+".join(safe_name(c) for c in example.class_names)


# ---------------------------------------------------------------------------- results


def _matrix(values: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.asarray([[math.nan if v is None else float(v) for v in row] for row in values], dtype=np.float64)


def result_matrices(summary: Mapping[str, Any]) -> Mapping[str, Sequence[Sequence[float | None]]]:
    """``{metric: R}`` of a results summary (key ``R``; ``matrices`` is accepted as well)."""
    for key in ("R", "matrices"):
        if key in summary:
            return summary[key]
    raise KeyError(f"the results summary has no R matrices (keys: {', '.join(sorted(summary))})")


def r_matrices_json(summary: Mapping[str, Any]) -> str:
    """The R matrices (``R[i][j]``: after step i, on task j; null where undefined), the number
    of evaluated sources per cell, forgetting per task and the summary scalars, as JSON."""
    doc = {
        "description": "R[metric][i][j]: mean score after step i on the classes of task j (dB); null = not seen yet",
        "R": result_matrices(summary),
        "counts": summary.get("counts"),
        "forgetting": summary.get("forgetting"),
        "forgetting_per_task": summary.get("forgetting_per_task"),
        "bwt": summary.get("bwt"),
        "average_incremental": summary.get("average_incremental"),
        "skipped": summary.get("skipped"),
    }
    if summary.get("val"):  # the same on the fixed validation mixtures (what a sweep selects on)
        doc["val"] = json.loads(r_matrices_json(summary["val"]))
    return json.dumps(doc, indent=2)


def r_matrix_figure(summary: Mapping[str, Any], metrics: Sequence[str] = ("sdr", "sir", "sar")) -> Figure:
    """Heatmaps of ``R[i][j]`` (rows: after step i, columns: task j), one panel per metric,
    each cell annotated with its value in dB."""
    fig = Figure(figsize=(4.2 * len(metrics), 3.8), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics):
        r = _matrix(result_matrices(summary)[name])
        steps = r.shape[0]
        finite = r[np.isfinite(r)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        image = ax.imshow(np.ma.masked_invalid(r), cmap="viridis", vmin=lo, vmax=hi)
        for i in range(steps):
            for j in range(steps):
                if np.isfinite(r[i, j]):
                    # Dark text on the bright end of viridis, light text elsewhere.
                    light = (r[i, j] - lo) / (hi - lo) < 0.6
                    ax.text(
                        j,
                        i,
                        f"{r[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if light else "black",
                    )
        ax.set_xticks(range(steps), [str(j + 1) for j in range(steps)])
        ax.set_yticks(range(steps), [str(i + 1) for i in range(steps)])
        ax.set_xlabel("task j")
        ax.set_ylabel("after step i")
        ax.set_title(f"R {METRIC_LABELS.get(name, name)} (dB)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def step_curves_figure(summary: Mapping[str, Any]) -> Figure:
    """Per-step curves of one trial: SDR/SIR/SAR over all seen / old / new classes, and the
    SDR of every task over the steps after it was learned (the forgetting, visibly)."""
    rows = summary["steps"]
    x = [int(row["step"]) + 1 for row in rows]
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, 4)

    def value(row: Mapping[str, Any], key: str) -> float:
        v = row.get(key)
        return math.nan if v is None else float(v)

    for ax, name in zip(axes[:3], ("sdr", "sir", "sar")):
        for suffix, label, style in (("", "all seen", "o-"), ("_old", "old", "s--"), ("_new", "new", "^:")):
            ys = [value(row, name + suffix) for row in rows]
            if any(math.isfinite(y) for y in ys):
                ax.plot(x, ys, style, label=label)
        ax.set_title(f"{METRIC_LABELS[name]} after each step")
        ax.set_xlabel("incremental step")
        ax.set_ylabel("dB")
        ax.set_xticks(x)
        ax.legend(fontsize=8)
    r = _matrix(result_matrices(summary)["sdr"])
    ax = axes[3]
    for j in range(r.shape[1]):
        steps = [i for i in range(j, r.shape[0]) if np.isfinite(r[i, j])]
        if steps:
            ax.plot([i + 1 for i in steps], [r[i, j] for i in steps], "o-", label=f"task {j + 1}")
    ax.set_title("SDR of each task")
    ax.set_xlabel("after step")
    ax.set_ylabel("dB")
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    return fig


def strategy_curves_figure(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    ylabel: str = "SDR over all seen classes (dB)",
    title: str = "Separation quality after each incremental step",
    bands: Mapping[str, Sequence[tuple[int, float, float]]] | None = None,
) -> Figure:
    """One line per strategy (paper Fig. 3 style): ``curves[label] = [(step, value), ...]``
    with 0-based steps, drawn as steps 1..T.

    ``bands[label] = [(step, low, high), ...]``: a shaded interval around that line (e.g. the
    95 % t-interval over a configuration's repeats); steps with NaN bounds (one run) get none.
    """
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ticks: set[int] = set()
    markers = "osD^v<>pP*hX"
    for k, (label, points) in enumerate(curves.items()):
        if not points:
            continue
        xs = [int(s) + 1 for s, _ in points]
        ticks.update(xs)
        (line,) = ax.plot(xs, [float(v) for _, v in points], marker=markers[k % len(markers)], label=label)
        band = [
            (int(s) + 1, float(lo), float(hi))
            for s, lo, hi in (bands or {}).get(label, ())
            if math.isfinite(float(lo)) and math.isfinite(float(hi))
        ]
        if band:
            ax.fill_between(
                [b[0] for b in band],
                [b[1] for b in band],
                [b[2] for b in band],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    ax.set_xlabel("incremental step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ticks:
        ax.set_xticks(sorted(ticks))
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return fig


def final_scores_figure(
    rows: Sequence[tuple[str, float, float, float]],
    errors: Sequence[tuple[float, float, float]] | None = None,
    title: str = "Best trial per strategy: final scores",
) -> Figure:
    """Grouped bars of final SDR / SIR / SAR per label: ``rows = [(label, sdr, sir, sar), ...]``;
    ``errors[i]``: half-widths of row i's intervals, drawn as error bars (NaN: none)."""
    fig = Figure(figsize=(max(5.0, 1.2 * len(rows) + 2), 4.0), layout="constrained")
    ax = fig.subplots()
    index = np.arange(len(rows))
    width = 0.27
    for k, name in enumerate(("SDR", "SIR", "SAR")):
        yerr = None
        if errors is not None:
            yerr = [0.0 if math.isnan(float(e[k])) else float(e[k]) for e in errors]
        ax.bar(
            index + (k - 1) * width,
            [float(r[k + 1]) for r in rows],
            width,
            yerr=yerr,
            capsize=3 if yerr else 0,
            label=name,
        )
    ax.set_xticks(index, [r[0] for r in rows], rotation=20, ha="right")
    ax.set_ylabel("dB after the last step")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def pareto_figure(
    points: Sequence[tuple[str, float, float, float, float, bool]],
    xlabel: str,
    ylabel: str,
    title: str = "Configurations and their Pareto front",
) -> Figure:
    """Scatter of configurations on two objectives: ``points = [(label, x, x_half_width, y,
    y_half_width, on_front), ...]`` (half-widths of 95 % intervals, NaN: no bar). Front members
    are drawn large, labelled and joined in x order; the others small and grey."""
    fig = Figure(figsize=(6.5, 4.6), layout="constrained")
    ax = fig.subplots()

    def bar(half: float) -> float | None:
        return half if math.isfinite(half) else None

    front = sorted((p for p in points if p[5]), key=lambda p: p[1])
    for label, x, xh, y, yh, on_front in points:
        ax.errorbar(
            [x],
            [y],
            xerr=bar(xh),
            yerr=bar(yh),
            fmt="o" if on_front else ".",
            color="C3" if on_front else "0.55",
            markersize=8 if on_front else 6,
            capsize=2,
            linewidth=0.8,
            zorder=3 if on_front else 2,
        )
        if on_front:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if front:
        ax.plot([p[1] for p in front], [p[3] for p in front], "-", color="C3", linewidth=1.2, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig
