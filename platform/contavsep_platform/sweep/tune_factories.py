"""Search and early stopping: the Optuna searcher and the Tune scheduler of a space."""

from __future__ import annotations

from typing import Any

from contavsep_platform.pruning import GroupASHA
from contavsep_platform.search import GroupedOptunaSearch
from contavsep_platform.spaces import SearchSpace
from contavsep_platform.study import StudyJournal


def make_searcher(space: SearchSpace, journal: StudyJournal | None = None) -> GroupedOptunaSearch:
    """The Optuna searcher of a space: configurations as groups of repeats, deduplicated; its
    study persists in ``journal`` (the sweep's ``optuna-journal.log``) when given."""
    return GroupedOptunaSearch(space, journal)


def make_scheduler(space: SearchSpace) -> Any:
    """FIFO, or ASHA on configuration-group means (rungs from ``grace_period >= 2`` steps)."""
    from ray.tune.schedulers import FIFOScheduler

    sch = space.scheduler
    if sch.type == "fifo":
        return FIFOScheduler()
    return GroupASHA(
        metric=space.metric_key,  # the validation value unless the space selects on test
        mode=space.mode,
        max_t=space.num_steps,
        grace_period=sch.grace_period,
        reduction_factor=sch.reduction_factor,
        group_size=space.repeats.count,
    )
