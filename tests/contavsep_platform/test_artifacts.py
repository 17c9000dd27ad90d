"""Trial artifacts: WAVs and spectrograms of example separations, R-matrix heatmaps, curves."""

import json
import math
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import soundfile

from contavsep.engine import Example
from contavsep.metrics import ContinualResults
from contavsep_platform.artifacts import (
    example_dirname,
    example_spectrogram_figure,
    final_scores_figure,
    log_magnitude_spectrogram,
    markdown_table,
    pareto_figure,
    r_matrices_json,
    r_matrix_figure,
    safe_name,
    save_figure,
    step_curves_figure,
    strategy_curves_figure,
    write_example,
)

SR = 11025


def _sine(freq: float, seconds: float = 0.5, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _example() -> Example:
    a, b = _sine(440.0, amplitude=0.5), _sine(1250.0, amplitude=0.5)
    refs = np.stack([a, b]) / 2
    # The second estimate exceeds full scale on purpose: it must be scaled down, not clipped.
    ests = np.stack([refs[0] * 0.9, refs[1] * 12.0]).astype(np.float32)
    return Example(
        mixture=refs.sum(0),
        references=refs,
        estimates=ests,
        class_names=("acoustic guitar", "erhu/violin"),
        sdr=(7.5, -1.25),
        sample_rate=SR,
    )


def _summary(steps: int = 3) -> dict:
    """A real results summary: per-source scores after each step, task of each source."""
    results = ContinualResults(steps)
    rng = np.random.default_rng(3)
    for step in range(steps):
        tasks = np.repeat(np.arange(step + 1), 4)
        sdr = 6.0 - 1.5 * (step - tasks) + rng.normal(0, 0.1, tasks.size)  # older tasks are forgotten
        results.add(step, tasks, sdr, sdr + 5.0, sdr + 2.0, np.zeros(tasks.size))
    return results.summary()


def test_spectrogram_of_a_unit_sine_peaks_at_0_db_in_its_bin():
    n_fft, hop = 512, 128
    bin_index = 40
    wave = _sine(bin_index * SR / n_fft, seconds=0.4)
    spec = log_magnitude_spectrogram(wave, n_fft, hop)
    assert spec.shape == (n_fft // 2 + 1, 1 + (wave.size - n_fft) // hop)
    column = spec[:, spec.shape[1] // 2]
    assert int(np.argmax(column)) == bin_index
    assert column[bin_index] == pytest.approx(0.0, abs=0.05)
    assert column[bin_index + 10] < -60.0 and spec.min() >= -80.0
    # shorter than one frame: padded, one frame
    assert log_magnitude_spectrogram(wave[:100], n_fft, hop).shape == (n_fft // 2 + 1, 1)


def test_example_is_written_as_playable_wavs_and_a_spectrogram(tmp_path):
    example = _example()
    files = write_example(example, tmp_path / example_dirname(0, example))
    names = sorted(p.name for p in files)
    assert names == sorted(
        [
            "mixture.wav",
            "0_acoustic_guitar_reference.wav",
            "0_acoustic_guitar_estimate.wav",
            "1_erhu_violin_reference.wav",
            "1_erhu_violin_estimate.wav",
            "spectrograms.png",
        ]
    )
    assert files[0].parent.name == "0_acoustic_guitar+erhu_violin"
    mix, sr = soundfile.read(files[0].parent / "mixture.wav", dtype="float32")
    assert sr == SR and mix.shape == example.mixture.shape
    np.testing.assert_allclose(mix, example.mixture, atol=1.0 / 32767)
    loud, _ = soundfile.read(files[0].parent / "1_erhu_violin_estimate.wav", dtype="float32")
    original = example.estimates[1]
    assert np.abs(loud).max() <= 1.0 and np.abs(loud).max() > 0.99  # scaled to full scale
    # scaled, not clipped: the waveform keeps its shape
    assert np.corrcoef(loud, original)[0, 1] > 0.9999
    image = matplotlib.image.imread(files[0].parent / "spectrograms.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    fig = example_spectrogram_figure(example)
    titles = [ax.get_title() for ax in fig.axes]
    assert "mixture" in titles and "erhu/violin: estimate (SDR -1.25 dB)" in titles


def test_r_matrices_json_and_heatmap_from_a_real_summary(tmp_path):
    summary = _summary(3)
    doc = json.loads(r_matrices_json(summary))
    assert doc["R"] == summary["R"]
    assert doc["R"]["sdr"][0][1] is None and doc["R"]["sdr"][0][2] is None  # tasks not seen yet
    assert doc["R"]["sdr"][2][0] == pytest.approx(3.0, abs=0.2)  # forgotten by 2 x 1.5 dB
    assert doc["forgetting"]["sdr"] == pytest.approx(summary["forgetting"]["sdr"])
    assert doc["counts"] == [[4, 0, 0], [4, 4, 0], [4, 4, 4]]

    fig = r_matrix_figure(summary)
    heatmaps = [ax for ax in fig.axes if ax.get_title().startswith("R ")]
    assert [ax.get_title() for ax in heatmaps] == ["R SDR (dB)", "R SIR (dB)", "R SAR (dB)"]
    # one annotation per defined cell (lower triangle: 6 of 9)
    assert len(heatmaps[0].texts) == 6
    path = save_figure(fig, tmp_path / "nested" / "R.png")
    assert matplotlib.image.imread(path).shape[1] > 600


def test_step_curves_show_all_old_new_and_each_task(tmp_path):
    summary = _summary(3)
    fig = step_curves_figure(summary)
    sdr_ax, task_ax = fig.axes[0], fig.axes[3]
    labels = [line.get_label() for line in sdr_ax.get_lines()]
    assert labels == ["all seen", "old", "new"]
    all_seen = sdr_ax.get_lines()[0]
    assert list(all_seen.get_xdata()) == [1, 2, 3]
    np.testing.assert_allclose(all_seen.get_ydata(), [row["sdr"] for row in summary["steps"]])
    # task j is drawn from step j+1 on
    task_lines = {line.get_label(): list(line.get_xdata()) for line in task_ax.get_lines()}
    assert task_lines == {"task 1": [1, 2, 3], "task 2": [2, 3], "task 3": [3]}
    save_figure(fig, tmp_path / "curves.png")


def test_strategy_curves_and_final_scores(tmp_path):
    curves = {"Fine-tuning": [(0, 6.0), (1, 3.0)], "ContAV-Sep": [(0, 6.1), (1, 5.2)], "empty": []}
    fig = strategy_curves_figure(curves)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["Fine-tuning", "ContAV-Sep"]
    assert list(lines[1].get_xdata()) == [1, 2] and list(lines[1].get_ydata()) == [6.1, 5.2]
    save_figure(fig, tmp_path / "fig3.png")
    bars = final_scores_figure([("LwF", 4.0, 9.0, 7.0), ("EWC", math.nan, 8.0, 6.0)])
    assert len(bars.axes[0].patches) == 6
    save_figure(bars, tmp_path / "bars.png")


def test_strategy_curves_with_interval_bands_and_pareto_scatter(tmp_path):
    curves = {"ContAV-Sep": [(0, 6.0), (1, 5.0)], "LwF": [(0, 4.0), (1, 3.0)]}
    bands = {"ContAV-Sep": [(0, 5.5, 6.5), (1, 4.0, 6.0)], "LwF": [(0, math.nan, math.nan), (1, math.nan, math.nan)]}
    fig = strategy_curves_figure(curves, bands=bands)
    shaded = fig.axes[0].collections
    assert len(shaded) == 1  # LwF has one run: its line, no band
    ys = shaded[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == 4.0 and max(ys) == 6.5
    save_figure(fig, tmp_path / "bands.png")
    points = [
        ("a", 5.0, 1.0, 1.0, 0.5, True),
        ("b", 4.0, math.nan, 3.0, math.nan, False),
        ("c", 2.0, 0.2, 0.5, 0.1, True),
    ]
    scatter = pareto_figure(points, "sdr", "forgetting/sdr")
    front = [line for line in scatter.axes[0].get_lines() if line.get_label() == "Pareto front"]
    assert len(front) == 1 and list(front[0].get_xdata()) == [2.0, 5.0]  # joined in x order
    assert [t.get_text() for t in scatter.axes[0].texts] == ["a", "c"]  # only front members are labelled
    save_figure(scatter, tmp_path / "pareto.png")


def test_markdown_table_formats_scores_params_and_gaps():
    text = markdown_table(["a", "b|c"], [[5.126, None], [0.0001, math.nan], [0.0, "x|y"], [3, 1e6]])
    lines = text.splitlines()
    assert lines[0] == "| a | b\\|c |" and lines[1] == "|---|---|"
    assert lines[2] == "| 5.13 | - |"
    assert lines[3] == "| 0.0001 | - |"
    assert lines[4] == "| 0.00 | x\\|y |"
    assert lines[5] == "| 3 | 1e+06 |"


def test_safe_name():
    assert safe_name("acoustic guitar") == "acoustic_guitar"
    assert safe_name("a/b\\c: d") == "a_b_c_d"
    assert safe_name("///") == "unnamed"


def test_drawing_does_not_load_pyplot_or_pick_a_backend():
    code = (
        "import sys, numpy as np\n"
        "from contavsep_platform.artifacts import strategy_curves_figure, save_figure\n"
        "import tempfile, os\n"
        "save_figure(strategy_curves_figure({'a': [(0, 1.0), (1, 2.0)]}), os.path.join(tempfile.mkdtemp(), 'x.png'))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
