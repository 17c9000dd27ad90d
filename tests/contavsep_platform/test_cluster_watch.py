"""The cluster watch's counting and the pre-sweep check of node shapes, on recorded node tables;
the per-node dataset cache folder and the trials' process-group backend."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from contavsep.data.format.reader import node_cache_dir
from contavsep_platform.cluster_nodes import check_worker_fits, count_nodes, node_shapes, node_types_of
from contavsep_platform.spaces import Resources, SpaceError, parse_space
from contavsep_platform.sweep.cluster_watch import ClusterWatch
from contavsep_platform.trial import process_group_backend

HEAD = {"NodeID": "aa" * 28, "Alive": True, "Resources": {"contavsep_driver": 3.0, "node:__internal_head__": 1.0}}


def _worker(i: int, alive: bool = True) -> dict:
    return {"NodeID": f"{i:056x}", "Alive": alive, "Resources": {"CPU": 1.0, "GPU": 1.0}}


def test_the_watch_counts_alive_workers_and_logs_only_changes(caplog):
    assert count_nodes([HEAD, _worker(1), _worker(2, alive=False)]) == (1, 1.0)
    watch = ClusterWatch(interval_s=0.0)
    with caplog.at_level("INFO", logger="contavsep.sweep"):
        assert watch.sample([HEAD]).workers == 0
        assert watch.sample([HEAD]) is None  # unchanged: no new point
        grown = watch.sample([HEAD, _worker(1), _worker(2)])
        shrunk = watch.sample([HEAD, _worker(1), _worker(2, alive=False)])
    assert (grown.workers, grown.gpus, shrunk.workers) == (2, 2.0, 1)
    assert [p.workers for p in watch.history] == [0, 2, 1]
    assert "cluster: 2 worker node(s) alive, 2 GPU(s) [+2]" in caplog.text
    assert "cluster: 1 worker node(s) alive, 1 GPU(s) [-1]" in caplog.text


def test_a_pickled_watch_starts_a_new_series():
    import pickle

    watch = ClusterWatch()
    watch.sample([HEAD, _worker(1)])
    assert pickle.loads(pickle.dumps(watch)).history == []


def _config(*groups: tuple[str, dict, int]) -> SimpleNamespace:
    return SimpleNamespace(node_group_configs=[SimpleNamespace(name=n, resources=r, max_count=m) for n, r, m in groups])


def test_a_worker_that_no_node_type_can_hold_is_refused_before_the_sweep_waits():
    config = _config(("head", {"contavsep_driver": 3}, 1), ("gpu-1x-spot", {"CPU": 16, "GPU": 1}, 8))
    shapes = node_shapes(node_types_of(config, None), [HEAD])  # the GPU type has no node yet: it still counts
    check_worker_fits(Resources(workers=2, cpus=8, gpus=1, driver_cpus=0.1), shapes)
    with pytest.raises(SpaceError, match=r"needs 4 CPU and 2 GPU on one node.*gpu-1x-spot: 16 CPU, 1 GPU"):
        check_worker_fits(Resources(workers=1, cpus=4, gpus=2, driver_cpus=0.1), shapes)
    # a node type the autoscaler may not launch (max 0) does not count; a node alive now does
    none = node_shapes(node_types_of(_config(("gpu-4x", {"CPU": 48, "GPU": 4}, 0)), None), [HEAD])
    with pytest.raises(SpaceError):
        check_worker_fits(Resources(workers=1, cpus=1, gpus=4, driver_cpus=0.1), none)
    check_worker_fits(Resources(workers=1, cpus=1, gpus=1, driver_cpus=0.1), node_shapes([], [HEAD, _worker(1)]))
    check_worker_fits(Resources(workers=1, cpus=64, gpus=0, driver_cpus=0.1), [])  # nothing known: no check


def test_the_cache_folder_is_placed_per_node_when_asked():
    assert node_cache_dir("", "f00") is None  # the default folder
    assert node_cache_dir("/scratch/c", "f00") == "/scratch/c"
    assert node_cache_dir("/scratch/c/{node}", "f00") == "/scratch/c/f00"


def test_trials_on_logical_gpus_that_train_on_the_cpu_use_gloo():
    def space(gpus: float, device: str):
        return parse_space(
            f"name: s\nbase: {{preset: tiny, data.uri: file:///d, train.device: {device}}}\n"
            "strategies:\n  finetune: {}\nnum_samples: 1\n"
            f"resources: {{workers: 1, cpus: 1, gpus: {gpus}, driver_cpus: 0.1}}\n",
            storage_uri="file:///s",
        )

    assert process_group_backend(space(1, "cpu"), {"strategy.name": "finetune"}) == "gloo"
    assert process_group_backend(space(1, "auto"), {"strategy.name": "finetune"}) == "nccl"
    assert process_group_backend(space(0, "auto"), {"strategy.name": "finetune"}) == "gloo"


def test_the_node_types_of_the_shipped_launcher_file_are_read_as_the_autoscaler_reads_them():
    import yaml

    from tests.fake_cluster import LAUNCHER_FILE

    types = {t.name: t for t in node_types_of(None, yaml.safe_load(LAUNCHER_FILE.read_text()))}
    assert "head" not in types  # the head is there already, not added
    assert types["gpu-1x-spot"].resources == {"CPU": 16.0, "GPU": 1.0} and types["gpu-1x-spot"].max_count == 8
    assert types["gpu-4x"].max_count == 2
    check_worker_fits(Resources(workers=2, cpus=12, gpus=2, driver_cpus=0.1), node_shapes(list(types.values()), []))
