"""`ray job submit` of a sweep against a real local Ray head (`contavsep services up --ray`).

Exactly what the README documents:

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- contavsep sweep search_spaces/smoke.yaml

then: the job succeeds, its trials ran on the head's cluster with the venv's Python, and what
lands (MLflow parent/child runs with per-step histories, step checkpoints on S3) is checked;
`ray job stop` of a running sweep frees the cluster's resources, and a second submission with
`--resume` finishes it without re-running what was done. After each, the S3 keys are nowhere but
in their 0600 files: not in any bucket object (Tune state, checkpoints, MLflow artifacts), Ray's
session folder (logs, Tune's local state), MLflow's SQL store, the services' logs, or the
dashboard's job API.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from contavsep.first_step import FIRST_STEPS_DIR
from tests.contavsep_platform.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")

pytestmark = pytest.mark.slow


def _ray_job(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, "job", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _status(dashboard: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(dashboard).get_job_status(job_id).value)


def _logs(dashboard: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(dashboard).get_job_logs(job_id)


def _reserved_groups(dashboard: str) -> list[dict]:
    """Placement groups on the cluster that hold or wait for resources (Ray's state API over
    HTTP: this process stays out of the cluster)."""
    import json
    import urllib.request

    from contavsep_platform.services import (
        ray_auth_headers,  # the dashboard may use Ray's token auth
    )

    request = urllib.request.Request(
        f"{dashboard}/api/v0/placement_groups?limit=1000&detail=true", headers=ray_auth_headers()
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        doc = json.loads(reply.read())
    groups = doc["data"]["result"]["result"]
    return [pg for pg in groups if pg["state"] != "REMOVED"]


_wait = wait_until


def _encodings(secret: str) -> list[tuple[str, bytes]]:
    """``secret`` as it could sit in a file, named: raw, hex (cloudpickles in Tune's JSON state),
    base64 at each of the three alignments."""
    raw = secret.encode()
    found = [("raw", raw), ("hex", raw.hex().encode()), ("HEX", raw.hex().upper().encode())]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)[4 if shift else 0 :]
        found.append((f"base64+{shift}", encoded[: len(encoded) - 4]))  # the stable middle, padding dropped
    return found


def assert_no_secret(ray_head, platform_home: Path) -> int:
    """Neither S3 key, in any encoding, in anything the services and the sweeps wrote; returns how
    many files were read (besides the keys files themselves)."""
    from contavsep_platform.services import ray_auth_headers
    from contavsep_platform.settings import CLIENT_KEYS_FILE, KEYS_FILE, read_state

    keys = [ray_head.s3.access_key, ray_head.s3.secret_key]
    needles = [(which, label, enc) for which, key in zip(("access", "secret"), keys) for label, enc in _encodings(key)]
    roots = [platform_home, Path(read_state(platform_home).options["ray_temp_dir"])]
    read = 0
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink() or path.name in (KEYS_FILE, CLIENT_KEYS_FILE):
                continue
            try:
                data = path.read_bytes()
            except OSError:  # a file Ray removed meanwhile
                continue
            read += 1
            hits += [f"{path} ({which} key, {label})" for which, label, enc in needles if enc in data]
    request = urllib.request.Request(f"{ray_head.ray_dashboard_url}/api/jobs/", headers=ray_auth_headers())
    with urllib.request.urlopen(request, timeout=30) as reply:
        jobs = reply.read()
    assert json.loads(jobs), "the job API lists the submitted jobs"
    hits += [f"GET /api/jobs/ ({which} key, {label})" for which, label, enc in needles if enc in jobs]
    assert not hits, hits
    return read


def _sweep_entrypoint(name: str, dataset: str, *extra: str) -> list[str]:
    # `which contavsep` first: the job must run the venv's console script (the head's PATH).
    # `ray job submit` quotes every word after `--`, hence one `sh -c` script.
    script = f"which contavsep && contavsep sweep search_spaces/smoke.yaml --name {name} --set data.uri={dataset} --quiet {' '.join(extra)}"
    return ["--", "sh", "-c", script]


def test_ray_job_submit_runs_the_smoke_sweep_on_the_cluster_and_logs_to_mlflow(ray_head, s3_dataset, platform_home):
    from mlflow import MlflowClient

    from contavsep import storage
    from contavsep_platform.trial import trial_uri

    dashboard = ray_head.ray_dashboard_url
    name = f"job-{int(time.time())}"
    job_id = f"sweep-{name}"
    done = _ray_job(
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        ".",
        "--submission-id",
        job_id,
        *_sweep_entrypoint(name, s3_dataset),
        timeout=1500,
    )
    logs = _logs(dashboard, job_id)
    assert _status(dashboard, job_id) == "SUCCEEDED", f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert str(Path(sys.executable).parent / "contavsep") in logs  # the venv's console script ran
    assert "ranking by final test sdr" in logs and "selection: selected on validation" in logs

    client = MlflowClient(ray_head.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    parents = client.search_runs(
        [experiment.experiment_id], f"tags.`contavsep.sweep` = '{name}' and tags.`contavsep.role` = 'sweep'"
    )
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    assert len(children) == 2
    for child in children:
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "sdr"))
        assert steps and steps == list(range(len(steps)))
        checkpoints = storage.list_dir(
            trial_uri(ray_head.storage_uri, name, child.data.tags["contavsep.trial"]), ray_head.s3
        )
        assert [c for c in checkpoints if c.startswith("step=")] == [f"step={k}" for k in steps]
    assert _wait(lambda: not _reserved_groups(dashboard), 60, "the sweep's placement groups to be released") is True
    # Tune's state (tuner.pkl, searcher state, experiment state), checkpoints, MLflow's store and
    # artifacts, Ray's logs (runtime_env_agent.log...) and job records: no key anywhere.
    sweep_files = [p.name for p in (platform_home / "s3" / "contavsep" / "sweeps" / name).rglob("*")]
    assert "tuner.pkl" in sweep_files and any(f.startswith("search_gen_state-") for f in sweep_files), sweep_files
    assert (platform_home / "mlflow" / "mlflow.db").exists()
    assert assert_no_secret(ray_head, platform_home) > 100


def test_ray_job_stop_frees_the_cluster_and_resume_finishes_the_sweep(ray_head, s3_dataset, platform_home):
    """... and within the grace period the head of `services up --ray` gives every job (its env
    carries RAY_JOB_STOP_WAIT_TIME_S; Ray's default SIGKILLs 3 s after the SIGTERM), with the
    README's plain `ray job submit`, the stopped sweep closes its MLflow runs (KILLED, none left
    RUNNING) and prints how to resume."""

    from mlflow import MlflowClient

    from contavsep import storage
    from contavsep_platform.sweep import JOB_STOP_GRACE_ENV
    from contavsep_platform.trial import trial_uri

    dashboard = ray_head.ray_dashboard_url
    name = f"stop-{int(time.time())}"
    job_id = f"sweep-{name}"
    # More iterations per step than smoke.yaml: the stop lands while trials still train.
    slow = ("--set", "train.iters_per_step=40")
    submitted = _ray_job(
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        ".",
        "--submission-id",
        job_id,
        "--no-wait",
        *_sweep_entrypoint(name, s3_dataset, *slow),
    )
    assert submitted.returncode == 0, submitted.stderr
    sweep_uri = storage.join(ray_head.storage_uri, "sweeps", name)

    def first_checkpoint() -> bool:
        files = storage.list_dir(sweep_uri, ray_head.s3, recursive=True)
        return any("/step=0/" in f for f in files)

    _wait(first_checkpoint, 900, "a first step checkpoint", pause=3)
    assert _reserved_groups(dashboard)  # the running trials hold placement groups
    signalled = time.monotonic()
    stopped = _ray_job(
        "stop", "--address", dashboard, job_id, timeout=int(JOB_STOP_GRACE_ENV["RAY_JOB_STOP_WAIT_TIME_S"]) + 60
    )
    assert stopped.returncode == 0, stopped.stderr
    assert _status(dashboard, job_id) == "STOPPED"
    print(f"`ray job stop` returned after {time.monotonic() - signalled:.0f} s")
    logs = _logs(dashboard, job_id)
    assert f"continue it with: contavsep sweep SPACE.yaml --name {name} --resume" in logs, logs[-3000:]
    client = MlflowClient(ray_head.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    (parent,) = client.search_runs(
        [experiment.experiment_id], f"tags.`contavsep.sweep` = '{name}' and tags.`contavsep.role` = 'sweep'"
    )
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "KILLED" and children
    assert [c.info.status for c in children if c.info.status == "RUNNING"] == []
    _wait(lambda: not _reserved_groups(dashboard), 120, "placement groups to be released after `ray job stop`")

    from ray.job_submission import JobSubmissionClient

    resumed_id = f"{job_id}-resume"
    done = _ray_job(
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        ".",
        "--submission-id",
        resumed_id,
        *_sweep_entrypoint(name, s3_dataset, *slow, "--resume"),
        timeout=1500,
    )
    assert _status(dashboard, resumed_id) == "SUCCEEDED", (
        f"{done.stdout[-3000:]}\n{JobSubmissionClient(dashboard).get_job_logs(resumed_id)[-3000:]}"
    )
    logs = _logs(dashboard, resumed_id)
    # the sweep folder: tune-<id>/ (Tune), <id>/ (Train runs), first-steps/ (shared step 0s), state files
    trial_ids = sorted(
        {
            n
            for n in storage.list_dir(sweep_uri, ray_head.s3)
            if not n.startswith(("tune-", ".")) and "." not in n and "-state-" not in n and n != FIRST_STEPS_DIR
        }
    )
    assert len(trial_ids) >= 1
    for trial_id in trial_ids:
        checkpoints = [
            c
            for c in storage.list_dir(trial_uri(ray_head.storage_uri, name, trial_id), ray_head.s3)
            if c.startswith("step=")
        ]
        assert checkpoints[0] == "step=0"
    assert "complete" in logs and "interrupted" not in logs
    _wait(lambda: not _reserved_groups(dashboard), 60, "placement groups to be released after the resumed sweep")
    assert_no_secret(ray_head, platform_home)  # also after a stop and a restore of the Tune state
