"""The views of a search on configurations whose values are set by hand, and the report page
rendered by a real headless Chromium (its images load, or the page says which did not)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from contavsep_platform.comparison import RunRecord, compare, group_configurations
from contavsep_platform.report import SweepRecord, TrialRecord, build_report
from contavsep_platform.report_html import write_html
from contavsep_platform.search_views import (
    View,
    importance_panels,
    importance_view,
    parallel_coordinates_view,
)

# lwf: 8 configurations of (a, b) x 2 seeds; the final SDR follows a, the forgetting follows b.
GRID = [(0.1, 2.0), (0.9, 1.0), (0.5, 3.0), (0.3, 0.5), (0.7, 2.5), (0.2, 1.5), (0.8, 0.2), (0.4, 2.2)]


def _comparison():
    runs = []
    for i, (a, b) in enumerate(GRID):
        for seed in range(2):
            values = {"sdr": 10 * a + 0.01 * seed, "forgetting/sdr": 2 * b - 0.01 * seed}
            runs.append(
                RunRecord(
                    f"r{i}s{seed}",
                    f"c{i}",
                    f"s{seed}-o0",
                    "lwf",
                    0,
                    {"strategy.lambda_dist": a, "strategy.temperature": b},
                    values,
                    True,
                )
            )
    runs.append(RunRecord("ft", "ft", "s0-o0", "finetune", 0, {}, {"sdr": 1.0, "forgetting/sdr": 4.0}, True))
    return compare(group_configurations(runs), "sdr", "max", ("forgetting/sdr",))


OBJECTIVES = [("sdr", "max"), ("forgetting/sdr", "min")]


def test_importance_names_the_key_each_objective_follows(tmp_path):
    panels, missing = importance_panels(_comparison(), OBJECTIVES)
    assert [title for title, _, _ in panels] == ["lwf"]
    _, keys, (sdr, forgetting) = panels[0]
    assert keys == ["strategy.lambda_dist", "strategy.temperature"]
    assert sdr["strategy.lambda_dist"] > 0.8 and forgetting["strategy.temperature"] > 0.8
    assert missing == [
        "all strategies: 1 searched key(s) vary (strategy); importance needs at least 2 (one key"
        " explains all the variance by construction)",
        "finetune: 0 searched key(s) vary (none); importance needs at least 2 (one key explains all the"
        " variance by construction)",
    ]
    view = importance_view(_comparison(), OBJECTIVES, tmp_path)
    assert view.file is not None and matplotlib.image.imread(view.file).shape[0] > 200
    assert view.findings[0].startswith("lwf, sdr: strategy.lambda_dist explains")
    assert view.findings[1].startswith("lwf, forgetting/sdr: strategy.temperature explains")

    parallel = parallel_coordinates_view(_comparison(), OBJECTIVES, tmp_path)
    assert parallel.file is not None
    assert parallel.findings == (
        "best final sdr: lwf (mem 0) with strategy.lambda_dist=0.9, strategy.temperature=1 (9.00 ± 0.06)",
    )


def test_views_that_do_not_apply_say_why(tmp_path):
    one = [
        RunRecord("r", "c", "s0-o0", "lwf", 0, {"strategy.lambda_dist": 0.5}, {"sdr": 1.0, "forgetting/sdr": 1.0}, True)
    ]
    comparison = compare(group_configurations(one), "sdr", "max", ("forgetting/sdr",))
    assert importance_view(comparison, OBJECTIVES, tmp_path).file is None
    view = parallel_coordinates_view(comparison, OBJECTIVES, tmp_path)
    assert view.file is None and view.caption == (
        "Not drawn: 1 complete configuration(s) and 0 searched key(s) that vary;"
        " the view needs at least 2 configurations and 1 key."
    )
    assert list(tmp_path.iterdir()) == []


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def rendered_images_state(page: Path) -> str:
    """The page's ``data-images`` attribute after headless Chromium rendered it from disk."""
    browser = _chromium()
    assert browser
    # --virtual-time-budget: Chromium fast-forwards its clock until the page is idle (the images
    # loaded, the load handler ran) and then dumps the DOM; no waiting on a wall-clock timer.
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={page.parent / '.chromium'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = re.search(r'<body[^>]*data-images="([^"]*)"', out.stdout)
    assert found, out.stdout[:2000]
    return found.group(1)


@pytest.mark.server
@pytest.mark.skipif(
    _chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
)
def test_the_report_page_opens_in_a_browser_with_every_image_loaded(tmp_path):
    trials = []
    for i, (a, b) in enumerate(GRID[:4]):
        for seed in range(2):
            metrics = {"final/sdr": 10 * a + seed, "final/forgetting_sdr": 2 * b, "final/sir": 1.0, "final/sar": 1.0}
            trials.append(
                TrialRecord(
                    f"r{i}s{seed}",
                    f"t{i}s{seed}",
                    "FINISHED",
                    {
                        "strategy.name": "lwf",
                        "strategy.lambda_dist": str(a),
                        "strategy.temperature": str(b),
                        "train.seed": str(seed),
                    },
                    metrics,
                )
            )
    sweep = SweepRecord(
        "browser",
        "http://127.0.0.1:1",
        "1",
        "p",
        "FINISHED",
        {},
        tuple(trials),
        "objectives:\n  - {metric: sdr, mode: max}\n  - {metric: forgetting/sdr, mode: min}\n",
    )
    histories = {t.run_id: [(0, 5.0), (1, t.metrics["final/sdr"])] for t in trials}
    r_doc = {"R": {"sdr": [[5.0, None], [4.0, 6.0]]}}
    report = build_report(sweep, histories, tmp_path / "out", r_document=lambda run_id: r_doc)
    page = tmp_path / "out" / "report.html"
    images = re.findall(r'<img src="data:image/png;base64,[^"]+" data-file="([^"]+)"', page.read_text())
    assert sorted(images) == sorted(p.name for p in report.files if p.suffix == ".png" and p.name != "final_scores.png")
    assert "importance.png" in images
    shutil.copytree(tmp_path / "out", tmp_path / "moved", ignore=shutil.ignore_patterns("*.png"))
    assert rendered_images_state(tmp_path / "moved" / "report.html") == "loaded"  # self-contained: no PNG needed

    # The check can fail: an image that does not decode is named.
    (tmp_path / "out" / "importance.png").write_bytes(b"not a png")
    write_html(tmp_path / "out", "broken", [], ([], []), [View("importance", tmp_path / "out" / "importance.png", "")])
    assert rendered_images_state(page) == "missing: importance.png"


def test_a_key_nested_in_another_is_named_and_continuous_keys_are_not():
    from contavsep_platform.search_views import _determines

    configs = _comparison().configurations
    lwf = [c for c in configs if c.strategy == "lwf"]
    # every value of a continuous key is seen once: no claim about nesting
    assert not _determines(lwf, "strategy.lambda_dist", "strategy.temperature")
    # one memory size per strategy: the strategy determines it, not the other way round
    assert _determines(configs, "strategy", "memory.per_class") and not _determines(
        configs, "memory.per_class", "strategy"
    )
