"""What the report reads from the sweep's logged ``search_space.yaml`` (as written, not validated)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from contavsep_platform.spaces import SPLITS, named_metric


@dataclass(frozen=True)
class SpaceInfo:
    """What the report needs from the sweep's search_space.yaml (all optional)."""

    objectives: tuple[
        tuple[str, str], ...
    ] = ()  # (metric, mode): ``objectives``, else ``metric``/``mode`` (split named)
    seeds: int | None = None  # repeats.seeds
    class_orders: int | None = None  # repeats.class_orders
    problem: str = ""  # why the file could not be read ("" when fine or absent)
    select_on: str = "val"  # val | test (a sweep from before validation sets logged no val values: it chose on test)
    factors: tuple[str, ...] = ()  # keys that are part of the method
    first_tasks: int = 0  # protocol first_tasks: the tasks the search saw (0: the whole stream)


def space_info(text: str) -> SpaceInfo:
    """Parse the parent's ``search_space.yaml`` as written (not validated: the report of an old
    sweep must not fail on a space format that has changed since)."""
    if not text.strip():
        return SpaceInfo()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return SpaceInfo(problem=f"search_space.yaml is not valid YAML ({' '.join(str(exc).split())[:120]})")
    if not isinstance(raw, Mapping):
        return SpaceInfo()
    objectives: tuple[tuple[str, str], ...] = ()
    listed = raw.get("objectives")
    if isinstance(listed, list):
        objectives = tuple(
            (str(o["metric"]), str(o.get("mode", "max"))) for o in listed if isinstance(o, Mapping) and "metric" in o
        )
    elif raw.get("metric") is not None:
        objectives = ((str(raw["metric"]), str(raw.get("mode", "max"))),)
    raw_repeats = raw.get("repeats")
    repeats = raw_repeats if isinstance(raw_repeats, Mapping) else {}
    seeds, orders = repeats.get("seeds", 1 if repeats else None), repeats.get("class_orders", 1 if repeats else None)
    select_on = str(raw.get("select_on", "val"))
    objectives = tuple((named_metric(m, select_on if select_on in SPLITS else "val"), mode) for m, mode in objectives)
    factors = (
        tuple(str(f) for f in raw["factors"] if isinstance(f, str)) if isinstance(raw.get("factors"), list) else ()
    )
    protocol = raw.get("protocol")
    protocol = {"type": protocol} if isinstance(protocol, str) else protocol if isinstance(protocol, Mapping) else {}
    first_tasks = int(protocol.get("tasks", 2)) if protocol.get("type") == "first_tasks" else 0
    return SpaceInfo(
        objectives,
        seeds if isinstance(seeds, int) else None,
        orders if isinstance(orders, int) else None,
        select_on=select_on,
        factors=factors,
        first_tasks=first_tasks,
    )
