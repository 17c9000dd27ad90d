"""A sweep on an autoscaling cluster, for real: Ray's autoscaler with its fake multi-node provider
(tests/fake_cluster.py: the launcher file's head and spot GPU worker type, scaled to this
machine), the project's S3 and MLflow services, and `ray job submit`.

The cluster starts with no worker node; the sweep's trials ask for 1 logical GPU each (their
device is the CPU); the autoscaler adds GPU nodes for them, the trials run there, each node
downloads the dataset once into its own cache, and the nodes go once idle.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.contavsep_platform.conftest import wait_until
from tests.fake_cluster import FakeCluster, start_fake_cluster

RAY = str(Path(sys.executable).parent / "ray")

pytestmark = pytest.mark.slow


_wait = wait_until


@pytest.fixture(scope="module")
def fake_cluster(services, platform_home, tmp_path_factory) -> FakeCluster:
    """A fake autoscaling cluster whose head has the services' environment, as `services up --ray`
    gives its head: endpoints in the env, S3 keys only in the state folder's 0600 keys file."""
    import tempfile

    from contavsep_platform.services.launch import ray_command
    from tests.contavsep_platform.conftest import free_ports

    ports = free_ports(["ray", "dashboard", "ray_client", "dashboard_agent"])
    _, env = ray_command(platform_home, ports, 0, None)
    assert not any(k in env for k in ("AWS_SECRET_ACCESS_KEY", "CONTAVSEP_S3_SECRET_KEY"))
    temp_dir = Path(tempfile.mkdtemp(prefix="cvfc-", dir="/tmp")) / "r"  # short: Ray's socket paths
    cluster = start_fake_cluster(temp_dir, ports, env, idle_timeout_s=60.0)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_a_sweep_grows_the_cluster_runs_on_gpu_workers_with_one_download_per_node_and_it_shrinks(
    fake_cluster, s3_dataset, platform_home, tmp_path
):
    from mlflow import MlflowClient
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    from contavsep import storage
    from contavsep.metric_names import DOWNLOADED_METRIC, GPUS_METRIC, WORKER_NODES_METRIC
    from contavsep_platform.settings import resolve_endpoints
    from contavsep_platform.trial import trial_uri

    endpoints = resolve_endpoints()
    assert fake_cluster.alive_workers() == []  # min_workers 0: nothing runs before the sweep asks
    cache_root = tmp_path / "node-cache"
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    # 2 configurations x 2 seeds = 4 trials of 1 GPU on at most 2 one-GPU nodes: two rounds, so
    # the second round's trials find their node's cache.
    (job_dir / "autoscale.yaml").write_text(
        "name: autoscale\n"
        "base:\n"
        "  preset: tiny\n"
        f"  data.uri: {s3_dataset}\n"
        "  data.num_steps: 2\n  data.classes_per_step: 2\n"
        "  train.iters_per_step: 3\n  train.batch_size: 4\n  train.device: cpu\n"
        "  eval.windows_per_clip: 1\n  eval.pairs_per_clip: 1\n  eval.examples: 0\n"
        f'  data.cache_dir: "{cache_root}/{{node}}"\n'
        "strategies:\n  finetune: {}\n  lwf: {}\n"
        "points_to_evaluate:\n  - {strategy.name: finetune}\n  - {strategy.name: lwf}\n"
        "num_samples: 2\nrepeats: {seeds: 2}\nscheduler: {type: fifo}\n"
        "resources: {workers: 1, cpus: 1, gpus: 1, driver_cpus: 0.1}\n"
    )
    name = f"autoscale-{int(time.time())}"
    # No --working-dir: fake nodes share one session folder, and the runtime-env agent of a node
    # that goes away deletes the job's unpacked working dir under the driver (on separate
    # machines each node unpacks its own copy).
    submitted = time.time()
    done = subprocess.run(
        [RAY, "job", "submit", "--address", fake_cluster.dashboard_url, "--submission-id", name, "--",
         "sh", "-c", f"cd {job_dir} && contavsep sweep autoscale.yaml --name {name} --quiet"],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert "cluster: worker nodes over time" in done.stdout

    client = MlflowClient(endpoints.mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("autoscale")
    parent = client.search_runs(
        [experiment.experiment_id], f"tags.`contavsep.sweep` = '{name}' and tags.`contavsep.role` = 'sweep'"
    )[0]
    assert parent.info.status == "FINISHED"
    trials = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    first_start = min(t.info.start_time for t in trials) / 1000
    print(f"submit to first trial run: {first_start - submitted:.1f} s")

    # Grown from 0 worker nodes to 2 (the series the sweep logged to its parent run), and the
    # trials ran on those GPU workers, never on the head.
    series = sorted(client.get_metric_history(parent.info.run_id, WORKER_NODES_METRIC), key=lambda m: m.step)
    gpus = sorted(client.get_metric_history(parent.info.run_id, GPUS_METRIC), key=lambda m: m.step)
    print("worker nodes over the sweep (s: nodes):", [(m.step, int(m.value)) for m in series])
    assert series[0].value == 0 and max(m.value for m in series) == 2 and max(m.value for m in gpus) == 2
    nodes = {t.data.tags["contavsep.node"] for t in trials}
    assert FAKE_HEAD_NODE_ID not in nodes and nodes <= {n["node_id"] for n in fake_cluster.nodes()}

    # One dataset download per node: every node that ran a trial has the dataset in its own cache,
    # the attempts that downloaded it are exactly one per such node, and the other trials found it.
    downloads = [m.value for t in trials for m in client.get_metric_history(t.info.run_id, DOWNLOADED_METRIC)]
    cached = sorted(p.parent.parent.name for p in cache_root.glob("*/datasets/*.arrow"))
    print(f"downloads: {sum(downloads):g} for {len(downloads)} trial attempts; nodes with the dataset: {cached}")
    assert set(cached) == nodes and sum(downloads) == len(cached) and len(downloads) > len(cached)

    # Results on S3: each trial's step checkpoints.
    for trial in trials:
        found = storage.list_dir(
            trial_uri(endpoints.storage_uri, name, trial.data.tags["contavsep.trial"]), endpoints.s3
        )
        assert [c for c in found if c.startswith("step=")] == ["step=0", "step=1"]

    # Shrunk: idle workers go after the idle timeout (60 s here: a new trial takes 15-30 s on 2 busy cores from its start to its worker asking for the node).
    ended = time.time()
    _wait(lambda: not fake_cluster.alive_workers(), 180, "the idle worker nodes to be removed")
    print(f"all worker nodes removed {time.time() - ended:.1f} s after the sweep ended")
