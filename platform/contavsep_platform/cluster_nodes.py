"""The nodes of a Ray cluster as the sweep sees them: node counts over time, the node types an
autoscaler may add, and the check that a trial's Train worker fits one of them.

Plain functions of Ray's node table (``ray.nodes()``) and of the autoscaler's config (Ray's
published ``ClusterConfig`` or the autoscaler's YAML file), so the tracking side and the tests
need no Ray cluster; :mod:`contavsep_platform.sweep.cluster_watch` samples a live one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contavsep_platform.spaces import Resources, SpaceError

HEAD_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class NodeCount:
    """One sample: seconds since the sweep started, alive worker nodes (the head excluded) and
    the GPUs of all alive nodes."""

    at_s: float
    workers: int
    gpus: float
    time_ms: int  # wall clock (MLflow's timestamp of the point)


def count_nodes(nodes: Sequence[Mapping[str, Any]]) -> tuple[int, float]:
    """(alive worker nodes, GPUs of all alive nodes) of ``ray.nodes()``."""
    alive = [n for n in nodes if n.get("Alive")]
    workers = sum(1 for n in alive if HEAD_RESOURCE not in (n.get("Resources") or {}))
    gpus = sum(float((n.get("Resources") or {}).get("GPU", 0.0)) for n in alive)
    return workers, gpus


@dataclass(frozen=True)
class NodeType:
    """A node type an autoscaler can add: its resources per node and how many it may add."""

    name: str
    resources: dict[str, float]
    max_count: int  # -1: no limit


def node_types_of(cluster_config: Any, autoscaling_yaml: Mapping[str, Any] | None) -> list[NodeType]:
    """The node types with a ``max_count`` above 0 of Ray's published cluster config (protobuf
    ``ClusterConfig``) or, without one, of an autoscaler config file (``available_node_types``
    with ``resources`` and ``max_workers``; the cluster-wide ``max_workers`` caps each)."""
    types = []
    for group in getattr(cluster_config, "node_group_configs", None) or []:
        if group.max_count != 0:
            types.append(NodeType(str(group.name), {k: float(v) for k, v in group.resources.items()}, group.max_count))
    if types or not autoscaling_yaml:
        return types
    cap = int(autoscaling_yaml.get("max_workers", 2**31))
    for name, spec in (autoscaling_yaml.get("available_node_types") or {}).items():
        count = min(int(spec.get("max_workers", cap)), cap)
        if count > 0 and name != autoscaling_yaml.get("head_node_type"):
            resources = {k: float(v) for k, v in (spec.get("resources") or {}).items() if isinstance(v, (int, float))}
            types.append(NodeType(str(name), resources, count))
    return types


def node_shapes(types: Sequence[NodeType], alive: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, float]]]:
    """(name, resources) of every node a trial could ever get: the autoscaler's node types and
    the nodes alive now."""
    shapes = [(t.name, dict(t.resources)) for t in types]
    for node in alive:
        if node.get("Alive"):
            shapes.append((f"node {str(node.get('NodeID', ''))[:8]}", dict(node.get("Resources") or {})))
    return shapes


def check_worker_fits(resources: Resources, shapes: Sequence[tuple[str, Mapping[str, float]]]) -> None:
    """Raise :class:`SpaceError` (one line, before the sweep waits for nodes that will never come)
    if no node shape holds one Train worker of a trial (``resources.cpus`` CPU and
    ``resources.gpus`` GPU together on one node). No shapes known: nothing to check."""
    if not shapes:
        return
    need = {"CPU": resources.cpus, "GPU": resources.gpus}
    for _, offer in shapes:
        if all(offer.get(k, 0.0) + 1e-9 >= v for k, v in need.items() if v > 0):
            return
    offered = "; ".join(
        f"{name}: {offer.get('CPU', 0.0):g} CPU, {offer.get('GPU', 0.0):g} GPU"
        for name, offer in sorted({n: o for n, o in shapes}.items())
    )
    raise SpaceError(
        f"one Train worker needs {resources.cpus:g} CPU and {resources.gpus:g} GPU on one node, but no node"
        f" of this cluster has that, now or after scaling up ({offered}); lower resources.cpus/gpus"
        f" or add a node type that holds it"
    )
