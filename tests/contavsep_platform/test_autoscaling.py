"""A sweep on an autoscaling cluster, for real: Ray's autoscaler with its fake multi-node provider
(tests/fake_cluster.py: the launcher file's head and spot GPU worker type, scaled to this
machine), the project's S3 and MLflow services, and `ray job submit`.

The cluster starts with no worker node; the sweep's trials ask for 1 logical GPU each (their
device is the CPU); the autoscaler adds GPU nodes for them, the trials run there, each node
downloads the dataset once into its own cache, and the nodes go once idle.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.contavsep_platform.conftest import wait_until
from tests.fake_cluster import WORKER_MAX, FakeCluster, start_fake_cluster

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
        shutil.rmtree(temp_dir.parent, ignore_errors=True)


def _space(
    name: str,
    data: str,
    cache_root: Path,
    *,
    seeds: int,
    max_failures: int,
    strategies: tuple[str, ...] = ("finetune", "lwf"),
    resources: str = "{workers: 1, cpus: 1, gpus: 1, driver_cpus: 0.1, max_concurrent: 2}",
) -> str:
    """A fine-tuning and an LwF configuration on ``seeds`` seeds, 1 logical GPU per trial (device:
    the CPU). The steps are long enough (120 iterations, ~10 s) for a node to be lost inside one."""
    return (
        f"name: {name}\n"
        "base:\n"
        "  preset: tiny\n"
        f"  data.uri: {data}\n"
        "  data.num_steps: 2\n  data.classes_per_step: 2\n"
        "  train.iters_per_step: 120\n  train.batch_size: 4\n  train.device: cpu\n"
        "  eval.windows_per_clip: 1\n  eval.pairs_per_clip: 1\n  eval.examples: 0\n"
        f'  data.cache_dir: "{cache_root}/{{node}}"\n'
        "strategies:\n"
        + "".join(f"  {s}: {{}}\n" for s in strategies)
        + "points_to_evaluate:\n"
        + "".join(f"  - {{strategy.name: {s}}}\n" for s in strategies)
        + f"num_samples: {len(strategies)}\nrepeats: {{seeds: {seeds}}}\nscheduler: {{type: fifo}}\n"
        f"max_failures: {max_failures}\nresources: {resources}\n"
    )


def _submit(cluster: FakeCluster, job_dir: Path, space_file: str, name: str, *extra: str, wait: bool = True):
    # No --working-dir: fake nodes share one session folder, and the runtime-env agent of a node
    # that goes away deletes the job's unpacked working dir under the driver (on separate
    # machines each node unpacks its own copy).
    command = f"cd {job_dir} && contavsep sweep {space_file} --name {name} --quiet {' '.join(extra)}"
    return subprocess.run(
        [RAY, "job", "submit", "--address", cluster.dashboard_url, "--submission-id", f"{name}{'-'.join(('',) + extra)}",
         *([] if wait else ["--no-wait"]), "--", "sh", "-c", command],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip


def _sweep_runs(client, experiment: str, name: str) -> tuple:
    exp = client.get_experiment_by_name(experiment)
    parent = client.search_runs(
        [exp.experiment_id], f"tags.`contavsep.sweep` = '{name}' and tags.`contavsep.role` = 'sweep'"
    )[0]
    trials = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return parent, trials


@pytest.fixture(scope="module")
def autoscaled(fake_cluster, s3_dataset, tmp_path_factory):
    """The scale-up/down sweep (4 trials), submitted once the cluster is at 0 worker nodes; also the
    uninterrupted twins of the lost-node test's trials."""
    initial = fake_cluster.alive_workers()
    job_dir = tmp_path_factory.mktemp("autoscale-job")
    cache_root = tmp_path_factory.mktemp("node-cache")
    # 2 configurations x 2 seeds = 4 trials of 1 GPU on at most 2 one-GPU nodes: two rounds, so
    # the second round's trials find their node's cache.
    (job_dir / "autoscale.yaml").write_text(_space("autoscale", s3_dataset, cache_root, seeds=2, max_failures=0))
    name = f"autoscale-{int(time.time())}"
    submitted = time.time()
    done = _submit(fake_cluster, job_dir, "autoscale.yaml", name)
    ended = time.time()
    return {"initial": initial, "job": done, "name": name, "submitted": submitted, "ended": ended,
            "cache_root": cache_root, "data": s3_dataset}  # fmt: skip


def test_a_sweep_grows_the_cluster_runs_on_gpu_workers_with_one_download_per_node_and_it_shrinks(
    fake_cluster, autoscaled
):
    from mlflow import MlflowClient
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    from contavsep import storage
    from contavsep.metric_names import DOWNLOADED_METRIC, GPUS_METRIC, WORKER_NODES_METRIC
    from contavsep_platform.settings import resolve_endpoints
    from contavsep_platform.trial import trial_uri

    endpoints = resolve_endpoints()
    assert autoscaled["initial"] == []  # min_workers 0: nothing ran before the sweep asked
    done, name, submitted, cache_root = (autoscaled[k] for k in ("job", "name", "submitted", "cache_root"))
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert "cluster: worker nodes over time" in done.stdout

    client = MlflowClient(endpoints.mlflow_tracking_uri)
    parent, trials = _sweep_runs(client, "autoscale", name)
    assert parent.info.status == "FINISHED"
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    first_start = min(t.info.start_time for t in trials) / 1000
    print(f"submit to first trial run: {first_start - submitted:.1f} s")

    # Grown from 0 worker nodes to 2 (the series the sweep logged to its parent run), and the
    # trials ran on those GPU workers, never on the head.
    series = sorted(client.get_metric_history(parent.info.run_id, WORKER_NODES_METRIC), key=lambda m: m.step)
    gpus = sorted(client.get_metric_history(parent.info.run_id, GPUS_METRIC), key=lambda m: m.step)
    print("worker nodes over the sweep (s: nodes):", [(m.step, int(m.value)) for m in series])
    # At least the 2 nodes the 2 concurrent trials need (Ray Train also asks the autoscaler for its
    # workers' resources, so a third node may come for a while), never more than the type's max.
    assert series[0].value == 0 and 2 <= max(m.value for m in series) <= WORKER_MAX
    assert max(m.value for m in gpus) >= 2
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
    _wait(lambda: not fake_cluster.alive_workers(), 180, "the idle worker nodes to be removed")
    print(f"all worker nodes removed {time.time() - autoscaled['ended']:.1f} s after the sweep ended")


def test_a_lost_node_resumes_its_trial_from_the_last_step_and_only_an_unannounced_loss_counts_as_a_failure(
    fake_cluster, autoscaled, tmp_path
):
    """Two trials, each on its own GPU node, lose that node in the middle of step 1 (of 0..1):
    the fine-tuning trial's node is drained as preempted (a spot notice) and then killed; the LwF
    trial's node is killed without notice (its raylet SIGKILLed). With ``max_failures: 0`` the
    preempted trial still finishes (a preemption is not a failure) on a new node from its step-0
    checkpoint, and the killed one errors (the sweep exits 1). ``--resume`` continues it from
    its step-0 checkpoint. Both end with the metrics of their uninterrupted twins in the
    scale-up sweep (same configuration and seed), and MLflow holds each step once."""
    from mlflow import MlflowClient
    from ray.job_submission import JobSubmissionClient

    from contavsep import storage
    from contavsep_platform.settings import resolve_endpoints
    from contavsep_platform.trial import trial_uri

    endpoints = resolve_endpoints()
    client = MlflowClient(endpoints.mlflow_tracking_uri)
    jobs = JobSubmissionClient(fake_cluster.dashboard_url)
    name = f"lost-{int(time.time())}"
    (tmp_path / "lost.yaml").write_text(
        _space("autoscale", autoscaled["data"], autoscaled["cache_root"], seeds=1, max_failures=0)
    )  # fmt: skip
    assert _submit(fake_cluster, tmp_path, "lost.yaml", name, wait=False).returncode == 0
    lost: dict[str, str] = {}  # strategy -> the node it lost

    def lose_nodes_in_step_1() -> bool:
        exp = client.get_experiment_by_name("autoscale")
        parent = client.search_runs(
            [exp.experiment_id], f"tags.`contavsep.sweep` = '{name}' and tags.`contavsep.role` = 'sweep'"
        )
        runs = (
            client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'")
            if parent
            else []
        )
        for run in runs:
            strategy, node = run.data.tags.get("contavsep.strategy"), run.data.tags.get("contavsep.node")
            if strategy in lost or not node:
                continue
            found = storage.list_dir(
                trial_uri(endpoints.storage_uri, name, run.data.tags["contavsep.trial"]), endpoints.s3
            )
            if "step=0" not in found:
                continue
            assert "step=1" not in found, f"the {strategy} trial finished step 1 before its node could be lost"
            if strategy == "finetune":  # the spot notice, then the machine goes (if the drain has not ended it)
                fake_cluster.drain_as_preempted(node)
                fake_cluster.kill_node(node, missing_ok=True)
            else:
                fake_cluster.kill_node(node)
            lost[strategy] = node
        assert jobs.get_job_status(name).is_terminal() is False or len(lost) == 2, jobs.get_job_logs(name)[-3000:]
        return len(lost) == 2

    _wait(lose_nodes_in_step_1, 600, "both trials to reach step 1", pause=0.5)
    status = _wait(lambda: (s := jobs.get_job_status(name)).is_terminal() and s, 900, "the sweep to end")
    logs = jobs.get_job_logs(name)
    assert str(status.value) == "FAILED", logs[-3000:]  # the unannounced loss used up max_failures 0
    parent, runs = _sweep_runs(client, "autoscale", name)
    by_strategy = {r.data.tags["contavsep.strategy"]: r for r in runs}
    assert by_strategy["finetune"].info.status == "FINISHED" and by_strategy["lwf"].info.status != "RUNNING"

    resumed = _submit(fake_cluster, tmp_path, "lost.yaml", name, "--resume")
    assert resumed.returncode == 0, f"{resumed.stdout[-4000:]}\n{resumed.stderr[-2000:]}"
    parent, runs = _sweep_runs(client, "autoscale", name)
    _, twins = _sweep_runs(client, "autoscale", autoscaled["name"])
    assert parent.info.status == "FINISHED" and len(runs) == 2
    for run in runs:
        strategy = run.data.tags["contavsep.strategy"]
        assert run.info.status == "FINISHED", strategy
        assert run.data.tags["contavsep.node"] != lost[strategy]  # it finished on another node
        history = client.get_metric_history(run.info.run_id, "sdr")
        assert sorted(m.step for m in history) == [0, 1], (strategy, [m.step for m in history])  # each step once
        twin = [t for t in twins if t.data.params == run.data.params]
        assert len(twin) == 1, f"no uninterrupted twin of the {strategy} trial"
        finals = {k: v for k, v in run.data.metrics.items() if k.startswith("final/")}
        assert finals and finals == {k: twin[0].data.metrics[k] for k in finals}, strategy
        print(f"{strategy}: lost node {lost[strategy][-5:]} in step 1, finished on {run.data.tags['contavsep.node'][-5:]};"
              f" final/sdr {finals['final/sdr']:.4f} = twin {twin[0].data.metrics['final/sdr']:.4f}")  # fmt: skip


def test_a_two_worker_trial_on_two_nodes_ends_with_the_metrics_of_the_same_trial_on_one_node(
    fake_cluster, s3_dataset, tmp_path
):
    """DDP across nodes: 2 Train workers of 1 GPU each can only run on two one-GPU nodes (gloo on
    their CPUs); the same trial with its 2 workers on one machine (a private local Ray, CPU
    workers) ends with the same final metrics, bit for bit (a 2-rank sum does not depend on the
    order, and each rank draws its half of every batch from the same seed)."""
    import ray
    from mlflow import MlflowClient

    from contavsep.metric_names import WORKER_NODES_METRIC
    from contavsep_platform.settings import resolve_endpoints
    from contavsep_platform.spaces import parse_space
    from contavsep_platform.sweep import connect_ray, job_placement_groups, run_sweep

    endpoints = resolve_endpoints()
    client = MlflowClient(endpoints.mlflow_tracking_uri)
    cache_root, data = tmp_path / "node-cache", s3_dataset

    def text(resources: str) -> str:
        return _space("ddp", data, cache_root, seeds=1, max_failures=0, strategies=("finetune",), resources=resources)

    name = f"ddp-nodes-{int(time.time())}"
    (tmp_path / "ddp.yaml").write_text(text("{workers: 2, cpus: 1, gpus: 1, driver_cpus: 0.1}"))
    done = _submit(fake_cluster, tmp_path, "ddp.yaml", name)
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    parent, (two_nodes,) = _sweep_runs(client, "ddp", name)
    # one trial whose two 1-GPU workers need two 1-GPU nodes
    assert max(m.value for m in client.get_metric_history(parent.info.run_id, WORKER_NODES_METRIC)) >= 2
    assert two_nodes.info.status == "FINISHED"

    space = parse_space(text("{workers: 2, cpus: 0.9, gpus: 0, driver_cpus: 0.1}"), storage_uri=endpoints.storage_uri)
    started = connect_ray(None, {}) if not ray.is_initialized() else False
    try:
        outcome = run_sweep(
            space, storage_uri=endpoints.storage_uri, name=f"ddp-one-{int(time.time())}",
            tracking_uri=endpoints.mlflow_tracking_uri, s3=endpoints.s3, verbose=0,
        )  # fmt: skip
        assert job_placement_groups() == []
    finally:
        if started:
            ray.shutdown()
    (row,) = outcome.trials
    assert row.status == "complete" and row.metrics["workers"] == 2
    _, (one_node,) = _sweep_runs(client, "ddp", outcome.name)
    assert one_node.data.params == two_nodes.data.params  # the same trial: only where its workers ran differs
    finals = {k: v for k, v in two_nodes.data.metrics.items() if k.startswith("final/")}
    assert finals == {k: one_node.data.metrics[k] for k in finals}
    print(
        f"DDP, 2 workers: final/sdr {finals['final/sdr']:.6f} on 2 nodes = {one_node.data.metrics['final/sdr']:.6f} on 1"
    )
