"""`contavsep config --budget`: the per-step budget and the share of the paper's compute."""

from __future__ import annotations

import pytest

from contavsep_platform.cli import main


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_paper_budget_on_music21_is_the_references(capsys) -> None:
    code, out, _ = run_cli(capsys, "config", "--budget")
    assert code == 0
    iterations = [int(line.split()[4]) for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert iterations == [23_700, 38_100, 55_500, 62_600]
    assert "179900 iterations, 5756800 training mixtures per sequence = 100 % of the paper's" in out


@pytest.mark.parametrize(
    "argv, share",
    [
        (("--train-clips", "24"), "= 75 % of the paper's"),  # the default synthetic benchmark
        (("--preset", "search"), "= 4.45 % of the paper's"),
        (("--preset", "tiny", "--set", "train.iters_per_step=3"), "96 training mixtures per sequence = 0.00167 %"),
    ],
)
def test_shares(capsys, argv, share) -> None:
    code, out, _ = run_cli(capsys, "config", "--budget", *argv)
    assert code == 0 and share in out, out


def test_bad_train_clips_is_one_line(capsys) -> None:
    code, _, err = run_cli(capsys, "config", "--budget", "--train-clips", "lots")
    assert (
        code == 2
        and err.strip()
        == "contavsep config: error: --train-clips must be 'music21', N or N1,N2,... (whole numbers), got 'lots'"
    )
