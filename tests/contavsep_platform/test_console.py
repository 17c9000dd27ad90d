"""A sweep's console: the trials and the results, not Ray's and Tune's noise (which the log keeps).

One tiny real sweep (`contavsep sweep` as a subprocess, stdout and stderr pipes: what CI logs and
``ray job submit`` see) in its own CONTAVSEP_HOME (private local Ray, file:// storage, no MLflow).
Its console must show each trial's start, step and end lines and the final tables, and none of
the strings Ray and Tune print on their own; the sweep's log file must hold those. ``--resume
--verbose`` of the finished sweep (nothing left to run, so no second sweep) must show Tune's
own output again. The terminal mode (a table refreshed in place) is checked on its own.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What Ray and Tune print by themselves (Ray 2.60): Tune's experiment box, TensorBoard hint,
# status tables and result boxes (every run), the token-auth warning (every local Ray start
# without RAY_AUTH_MODE), the raylet's worker-pool warning (when fractional-CPU actors pile up:
# not every run).
ALWAYS_NOISE = (
    "Configuration for experiment",
    "To visualize your results with TensorBoard",
    "Trial status:",
    "completed after 2 iterations",
    "Token authentication is",
)
SOMETIMES_NOISE = ("PYTHON worker processes have been started",)


def _space(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "console.yaml"
    path.write_text(
        "name: console\n"
        f'base: {{preset: tiny, data.uri: "{data}", data.num_steps: 2, data.classes_per_step: 2, train.iters_per_step: 1,'
        " train.batch_size: 4, eval.windows_per_clip: 1, eval.pairs_per_clip: 1, eval.examples: 0}\n"
        "strategies:\n  finetune: {}\nnum_samples: 1\nscheduler: {type: fifo}\n"
        "resources: {workers: 1, cpus: 0.9, driver_cpus: 0.1}\n"
    )
    return path


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "contavsep_platform.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.server
def test_the_console_shows_trials_and_results_and_the_log_file_keeps_ray_and_tune(synth_dataset_factory, tmp_path):
    data = synth_dataset_factory(classes=4, clips_per_class=(4, 1, 2), seconds=1.6)
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "CONTAVSEP_", "AWS_", "RAY_ADDRESS", "RAY_AUTH_MODE"))
    }
    env.update(
        CONTAVSEP_HOME=str(home),
        CONTAVSEP_STORAGE=f"file://{tmp_path}/storage",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "platform"), env.get("PYTHONPATH", "")]),
    )
    space = _space(tmp_path, data)

    quiet = _cli(["sweep", str(space), "--name", "console"], env)
    console = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, console[-3000:]
    log = home / "logs" / "sweep-console.log"
    assert f"Ray's and Tune's output go to {log}" in quiet.stdout.splitlines()[0]
    noise = log.read_text()
    for text in ALWAYS_NOISE:
        assert text not in console, f"{text!r} on the console:\n{console}"
        assert text in noise, f"{text!r} not in the log file:\n{noise[-3000:]}"
    for text in SOMETIMES_NOISE:
        assert text not in console, f"{text!r} on the console:\n{console}"
    assert not quiet.stderr, quiet.stderr

    # One line per event: started, each step but the last, then the end line with the last step.
    (trial,) = set(re.findall(r"^trial (\w+)  finetune", quiet.stdout, re.M))
    events = [
        line.split("  ", 2)[2]
        for line in quiet.stdout.splitlines()
        if line.startswith(f"trial {trial}  finetune (mem ")
    ]
    assert events[:2] == ["started", events[1]] and re.fullmatch(
        r"step 1/2  val/sdr -?\d+\.\d\d  \d+:\d\d", events[1]
    ), quiet.stdout
    assert len(events) == 3 and re.fullmatch(r"step 2/2  val/sdr -?\d+\.\d\d  \d+:\d\d  complete", events[2]), (
        quiet.stdout
    )
    assert "ranking by final test sdr" in quiet.stdout and re.search(r"^1 +finetune \(mem \d+\)", quiet.stdout, re.M), (
        quiet.stdout
    )

    # --verbose: Tune's own output (and Ray's log lines) on the console, no log file named.
    verbose = _cli(["sweep", str(space), "--name", "console", "--resume", "--verbose"], env)
    assert verbose.returncode == 0, (verbose.stdout + verbose.stderr)[-3000:]
    assert "Configuration for experiment" in verbose.stdout and "Trial status: 1 TERMINATED" in verbose.stdout, (
        verbose.stdout
    )
    assert "Token authentication is" in verbose.stderr and "output go to" not in verbose.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_table_is_redrawn_in_place_not_appended(tmp_path):
    from ray.tune.experiment import Trial

    from contavsep_platform.live_table import LiveTable
    from contavsep_platform.spaces import parse_space
    from contavsep_platform.sweep_log import project_warnings_to

    space = parse_space(
        f'name: t\nbase: {{preset: tiny, data.uri: "file://{tmp_path}/d", data.num_steps: 3}}\n'
        "strategies:\n  finetune: {memory.per_class: 1}\n  contavsep: {}\nnum_samples: 4\n",
        storage_uri=f"file://{tmp_path}",
    )
    screen = _Terminal()
    table = LiveTable(space, screen)
    table.setup()
    try:
        a = Trial("x", config={"strategy.name": "finetune", "memory.per_class": 1}, trial_id="aaaa0001", stub=True)
        b = Trial("x", config={"strategy.name": "contavsep"}, trial_id="bbbb0002", stub=True)
        table.on_trial_start(0, [a, b], a)
        table.on_trial_start(0, [a, b], b)
        # the live table shows the value the search judges on (validation), never the test value
        table.on_trial_result(1, [a, b], a, {"step": 1.0, "val/sdr": 3.25, "sdr": 7.25})
        table.on_trial_result(2, [a, b], a, {"step": 3.0, "val/sdr": 4.5, "sdr": 8.5})
        table.on_trial_complete(3, [a, b], a)
        table.on_trial_error(3, [a, b], b)
        with project_warnings_to(table.say):  # the project's own warnings: above the table
            logging.getLogger("contavsep.tracking").warning("MLflow at %s is unreachable", "http://x")
    finally:
        table.close()
    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # cursor movement: frames overwrite each other
    last = drawn.rsplit("trial", 1)[1]  # the last frame, from its header on
    assert "finetune (mem 1)" in last and "3/3" in last and "4.50" in last and "complete" in last and "8.50" not in last
    assert "contavsep (mem " in last and "error" in last and "2 waiting" in last
    assert "started" not in drawn  # no appended event lines on a terminal
    assert "warning: MLflow at http://x is unreachable" in drawn.rsplit("trial", 1)[0]
