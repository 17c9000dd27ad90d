"""The MLflow UI as a user opens it: the runs-table link a sweep prints, rendered by headless
Chromium against the session's real MLflow server (SQL store), checked from the rendered DOM.

One Chromium launch: the sweep's runs are logged through the project's SweepTracker and
TrialTrackers (what trials do inside Ray), so the test costs seconds, not a sweep.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest
from mlflow import MlflowClient
from test_tracking import make_step_results

from contavsep_platform.tracking import SweepTracker, TrialTracker, dataset_input

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium (Debian package `chromium`; .ci/run installs it where missing)"
)


def render(url: str, profile_dir: str) -> str:
    """The DOM of ``url`` after its scripts ran (virtual time: the page's own requests finish)."""
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            f"--user-data-dir={profile_dir}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0 and out.stdout, out.stderr[-2000:]
    return out.stdout


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def test_the_printed_runs_table_link_lists_the_trials_by_name_with_their_dataset(services, tmp_path):
    uri = services.mlflow_tracking_uri
    manifest = {
        "content_hash": "5eed" * 16,
        "classes": ["violin", "flute", "cello", "tuba"],
        "totals": {"train": 16},
        "audio": {"sample_rate": 11025},
        "extractors": {"object": {"name": "synthetic-clip-prototype", "revision": "3"}},
    }
    dataset = dataset_input(f"{services.storage_uri}/datasets/synth-ui", manifest)
    sweep = SweepTracker(uri, "ui-test", "sweep-ui")
    parent = sweep.start("a: 1\n", {}, dataset)
    final_sdr = {}
    for seed, (strategy, memory, trial_id) in enumerate(
        [("finetune", 0, "1a2b3c4d"), ("lwf", 1, "5e6f7a8b"), ("contavsep", 1, "9c0d1e2f")]
    ):
        trial = TrialTracker(
            uri, "ui-test", parent, trial_id, {"strategy.name": strategy, "memory.per_class": memory}, dataset=dataset
        )
        steps = make_step_results(2, seed=seed)
        for step in steps:
            trial.log_step(step)
        trial.log_final(steps[-1].summary, "x: 1\n")
        final_sdr[trial.run_id] = (f"{strategy}-mem{memory}-{trial_id}", steps[-1].summary["final"]["sdr"])
    sweep.finish([])
    lines = sweep.link_lines()
    assert lines[0].startswith("MLflow runs of sweep sweep-ui: http")
    link = lines[0].split(": ", 1)[1]  # what the user copies from the terminal

    dom = render(link, str(tmp_path / "chromium"))
    text = visible_text(dom)
    # the runs table (not the GenAI overview the UI opens by default), with a Dataset column
    assert re.search(r"<title>Runs - ", dom), text[:500]
    assert "Token Usage" not in text and "Run Name" in text and "Dataset" in text
    assert "Model registry" in text and "Observability" not in text  # the model-training workflow's navigation
    # every trial as a row of its own, by its new name, next to the dataset (name and digest)
    for name, _ in final_sdr.values():
        assert name in text, text[:2000]
    assert text.count(f"synth-ui ({manifest['content_hash'][:12]})") == 4, text[:2000]  # parent + 3 trials
    assert "4 matching runs" in text
    # rows ordered by final SDR, best first; the parent run (no final SDR) last
    rows = dict(re.findall(r'row-index="(\d+)" row-id="([0-9a-f]{32})"', dom))
    order = [rows[k] for k in sorted(rows, key=int)]
    expected = sorted(final_sdr, key=lambda run_id: -final_sdr[run_id][1]) + [parent]
    assert order == expected, (order, expected)
    assert MlflowClient(uri).get_run(parent).info.run_name == "sweep-ui"
