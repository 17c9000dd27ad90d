"""The Ray connection of a sweep: attaching to a cluster or starting a private local Ray, the
placement groups that ended trials leave reserved, SIGTERM as Ctrl-C, and what one trial can
count on from the cluster."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ray.tune import Callback

from contavsep_platform.cluster_nodes import HEAD_RESOURCE, NodeType, node_shapes, node_types_of
from contavsep_platform.trial import PLACEMENT_GROUP_KEY

log = logging.getLogger("contavsep.sweep")

# The Train V2 API (Tune driver + TorchTrainer) on every process of the job (Ray 2.60's default,
# stated so an older cluster default cannot switch trials to the V1 API).
TRAIN_V2_ENV = {"RAY_TRAIN_V2_ENABLED": "1"}
# A local Ray start can lose a race against its own agents on a busy machine (the raylet gives
# them a fixed 15 s); the next attempt finds the imports in the page cache.
LOCAL_RAY_ATTEMPTS = 3


def _job_env_keys() -> set[str]:
    """Env var names the surrounding ``ray job submit`` already sets (ray.init must not repeat them)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return set()
    try:
        return set((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return set()


def connect_ray(address: str | None, env: Mapping[str, str]) -> bool:
    """Attach to the Ray cluster at ``address`` (RAY_ADDRESS, the `services up --ray` head, or the
    job's cluster inside ``ray job submit``), else start a private local Ray in this process.

    The private instance (``address="local"``) never joins a head that Ray's discovery file
    (``/tmp/ray/ray_current_cluster``) names, e.g. another user's ``ray start``; it does not
    write that file, lives in the state folder's temp dir when the socket paths allow it
    (:func:`~contavsep_platform.settings.private_ray_temp_dir`) and listens on 127.0.0.1 only.

    ``env`` (S3/MLflow settings: where the keys are, never the keys) becomes part of the job's
    runtime env, so trial drivers and Train workers on any node see it. Returns whether this
    process started Ray (and must stop it).
    """
    import ray

    from contavsep_platform.settings import default_state_dir, make_private_ray_temp_dir

    if ray.is_initialized():
        return False
    taken = _job_env_keys()
    env_vars = {k: v for k, v in {**env, **TRAIN_V2_ENV}.items() if k not in taken}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env_vars}, "logging_level": logging.WARNING}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "local":
        ray.init(address=address, **kwargs)
        return False
    state_dir = default_state_dir(env if env.get("CONTAVSEP_HOME") else None)
    kwargs["_temp_dir"] = make_private_ray_temp_dir(state_dir)
    for attempt in range(1, LOCAL_RAY_ATTEMPTS + 1):
        try:
            # No dashboard: a local sweep does not need it (the tables below report progress).
            # Without it Ray's state API is down, so Train's placement-group cleaner actors
            # repeat a warning every second: worker output stays in Ray's session logs.
            with _single_machine():
                ray.init(address="local", include_dashboard=False, log_to_driver=False, **kwargs)
            return True
        except Exception as exc:  # Ray raises a bare Exception when its node does not come up
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == LOCAL_RAY_ATTEMPTS:
                raise
            log.warning("local Ray did not start (attempt %d of %d): %s; retrying", attempt, LOCAL_RAY_ATTEMPTS, exc)
    raise AssertionError("unreachable")


_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _single_machine() -> Iterator[None]:
    """Ray's single-machine mode (its default on macOS and Windows) while a local Ray starts:
    the node IP stays 127.0.0.1, so its GCS, raylet, agents and workers listen on 127.0.0.1 only
    (otherwise on every interface) and no other machine's node can join. Ray reads the switch
    from the environment at import (this process imported Ray already) and its processes read
    it at start; both are restored afterwards."""
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_SINGLE_MACHINE_ENV] = saved_env


class PlacementGroupReaper(Callback):
    """Frees the Ray Train placement group of every trial that has ended.

    When Tune ends a trial (ASHA stops it, or it finished), it ends the trial's driver; the Train
    controller it owns dies with it, but the workers' placement group belongs to the job (the
    sweep) and, unless the controller removed it in time, stays reserved until the sweep ends:
    after a few trials a small cluster has no CPUs left and the next trials wait forever
    (measured here: a stopped trial always, a finished one sometimes). Train's own cleaner
    actor needs Ray's state API, i.e. a dashboard, which a local sweep does not start. Each
    trial reports its group's id; once the trial has ended and ``grace_s`` has passed (its
    driver and controller are gone, so nothing restarts the workers), the group is removed if
    it is still there.
    """

    def __init__(self, grace_s: float = 5.0):
        self.grace_s = grace_s
        self._group_of: dict[str, str] = {}
        self._ended_at: dict[str, float] = {}
        self.removed: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with the sweep (for --resume): monotonic times and the groups of
        # a previous Ray session mean nothing in the next one.
        return {"grace_s": self.grace_s, "_group_of": {}, "_ended_at": {}, "removed": []}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        group = result.get(PLACEMENT_GROUP_KEY)
        if group:
            self._group_of[trial.trial_id] = str(group)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended_at[trial.trial_id] = time.monotonic()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended_at[trial.trial_id] = time.monotonic()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.reap(self.grace_s)

    def reap(self, grace_s: float) -> None:
        now = time.monotonic()
        for trial_id, ended in list(self._ended_at.items()):
            if now - ended < grace_s:
                continue
            del self._ended_at[trial_id]
            group = self._group_of.pop(trial_id, None)
            if group and _remove_placement_group(group):
                self.removed.append(group)
                log.info("removed the placement group %s of stopped trial %s", group, trial_id)


def _remove_placement_group(group_id: str) -> bool:
    """Remove a placement group unless it is gone already; returns whether it was removed."""
    from ray._raylet import PlacementGroupID
    from ray.util import placement_group_table
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    group = PlacementGroup(PlacementGroupID.from_hex(group_id))
    if placement_group_table(group).get("state") in (None, "REMOVED"):
        return False
    remove_placement_group(group)
    return True


def job_placement_groups() -> list[dict[str, Any]]:
    """Placement groups of this Ray job that still hold (or wait for) resources."""
    import ray
    from ray.util import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    # A placement group id ends with the id of the job that created it (its actors included).
    return [
        pg
        for pg in placement_group_table().values()
        if pg["placement_group_id"].endswith(job) and pg["state"] != "REMOVED"
    ]


def release_placement_groups() -> int:
    """Remove this job's leftover placement groups once no trial runs any more (after the
    sweep, e.g. an interrupted one); returns how many were removed."""
    return sum(_remove_placement_group(pg["placement_group_id"]) for pg in job_placement_groups())


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``ray job stop`` sends SIGTERM: treat it like Ctrl-C, which Tune turns into a clean stop
    (trials stopped, experiment state saved for ``--resume``)."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Where the autoscaler's config is read when Ray does not publish it (Ray 2.60's autoscaler v1, the
# one `ray up` starts, never does): this variable, else the file `ray up` puts on the head.
AUTOSCALING_CONFIG_ENV = "CONTAVSEP_AUTOSCALING_CONFIG"
LAUNCHER_BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
_UNLIMITED_NODES = 1024  # what a node type without a max_count counts as (finite: trials at once is an int)


def autoscaler_node_types() -> list[NodeType]:
    """The node types an autoscaling cluster can add (``max_count`` > 0), empty on a fixed
    cluster: from the cluster config Ray publishes in its GCS (autoscaler v2, KubeRay), else from
    the autoscaler's config file on this machine (the sweep's driver runs on the head):
    ``$CONTAVSEP_AUTOSCALING_CONFIG``, else ``~/ray_bootstrap_config.yaml``."""
    try:  # private in Ray 2.60; Ray Train's resource pre-check uses the same call
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older/newer Ray without it: the file
        config = None
    types = node_types_of(config, None)
    if types:
        return types
    path = os.environ.get(AUTOSCALING_CONFIG_ENV) or os.path.expanduser(LAUNCHER_BOOTSTRAP_CONFIG)
    if not os.path.isfile(path):
        return []
    import yaml

    with open(path) as f:
        return node_types_of(None, yaml.safe_load(f))


def _cluster_capacity(types: list[NodeType] | None = None) -> dict[str, float]:
    """The resources trials can count on: what the cluster has now plus, on an autoscaling
    cluster, every node its autoscaler may add (its GPU workers may be at 0 nodes right now)."""
    import ray

    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    types = autoscaler_node_types() if types is None else types
    if not types:
        return now
    head = {k: float(v) for n in ray.nodes() if n.get("Alive") for k, v in (n.get("Resources") or {}).items()
            if HEAD_RESOURCE in (n.get("Resources") or {})}  # fmt: skip
    most: dict[str, float] = dict(head)
    for node_type in types:
        count = node_type.max_count if node_type.max_count >= 0 else _UNLIMITED_NODES  # -1: no limit
        for k, v in node_type.resources.items():
            most[k] = most.get(k, 0.0) + v * count
    return {k: max(most.get(k, 0.0), now.get(k, 0.0)) for k in set(most) | set(now)}


def cluster_node_shapes(types: list[NodeType] | None = None) -> list[tuple[str, dict[str, float]]]:
    """(name, resources) of the nodes a trial could get: the autoscaler's node types and the
    nodes alive now (see :func:`contavsep_platform.cluster_nodes.node_shapes`)."""
    import ray

    types = autoscaler_node_types() if types is None else types
    return node_shapes(types, ray.nodes())
