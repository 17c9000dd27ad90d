"""The class-incremental scenario: which classes each step introduces.

Step t (0-based) introduces ``classes_per_step`` new classes; after step t the model is tested
on every class seen so far. The class order is the dataset manifest's (the paper's order for
MUSIC-21), optionally shuffled by ``data.seed``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from contavsep.config import ConfigError, DataConfig


@dataclass(frozen=True)
class Scenario:
    """A fixed split of an ordered class list into incremental tasks.

    ``class_order`` holds dataset class ids in training order; ``tasks[t]`` the ids of step t.
    Models index their class queries by *position* in ``class_order`` (the "label"), so a label
    is stable across steps and the queries of step t are labels ``0 .. seen(t) - 1``.
    """

    class_names: tuple[str, ...]  # the dataset's class list (manifest order), indexed by class id
    class_order: tuple[int, ...]  # dataset class ids in training order
    classes_per_step: int

    @property
    def num_steps(self) -> int:
        return len(self.class_order) // self.classes_per_step

    def task_class_ids(self, step: int) -> tuple[int, ...]:
        """Dataset class ids introduced at ``step``."""
        c = self.classes_per_step
        return self.class_order[step * c : (step + 1) * c]

    def seen_class_ids(self, step: int) -> tuple[int, ...]:
        """Dataset class ids seen after ``step`` (all tasks 0..step)."""
        return self.class_order[: (step + 1) * self.classes_per_step]

    def num_seen(self, step: int) -> int:
        return (step + 1) * self.classes_per_step

    def label_of(self, class_id: int) -> int:
        """Query index (position in the training order) of a dataset class id."""
        return self.class_order.index(class_id)

    def task_of(self, class_id: int) -> int:
        """The step that introduced a dataset class id."""
        return self.label_of(class_id) // self.classes_per_step

    def describe(self) -> list[list[str]]:
        return [[self.class_names[c] for c in self.task_class_ids(t)] for t in range(self.num_steps)]


def make_scenario(class_names: list[str] | tuple[str, ...], cfg: DataConfig) -> Scenario:
    """Split the dataset's classes into ``cfg.num_steps`` tasks of ``cfg.classes_per_step``.

    Uses the first ``num_steps * classes_per_step`` classes of the (optionally shuffled) order and
    refuses a dataset with too few classes.
    """
    need = cfg.num_steps * cfg.classes_per_step
    if len(class_names) < need:
        raise ConfigError(
            f"the dataset has {len(class_names)} classes but data.num_steps x data.classes_per_step = "
            f"{cfg.num_steps} x {cfg.classes_per_step} = {need}; lower one of them or use a larger dataset"
        )
    order = list(range(len(class_names)))
    if cfg.shuffle_classes:
        random.Random(cfg.seed).shuffle(order)
    return Scenario(tuple(class_names), tuple(order[:need]), cfg.classes_per_step)
