"""Exemplar memory: a few training clips per old class, kept for rehearsal.

After each step, ``per_class`` clips of each class the step introduced are chosen at random and
kept for all later steps (the paper: 1 per class; ``per_class = 0`` is "without memory"). The
memory is part of a trial's resumable state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence


class ExemplarMemory:
    """Rows (dataset row indices) of remembered training clips, grouped by dataset class id."""

    def __init__(self, per_class: int):
        if per_class < 0:
            raise ValueError("memory.per_class must be >= 0")
        self.per_class = per_class
        self._rows: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())

    @property
    def class_ids(self) -> list[int]:
        return sorted(self._rows)

    def rows(self) -> list[int]:
        """All remembered rows, ordered by class id then selection order."""
        return [r for c in sorted(self._rows) for r in self._rows[c]]

    def rows_of(self, class_id: int) -> list[int]:
        return list(self._rows.get(class_id, []))

    def update(
        self, train_rows_by_class: Mapping[int, Iterable[int]], class_ids: Sequence[int], rng: random.Random
    ) -> None:
        """Select exemplars for the classes a step just introduced (random selection)."""
        if self.per_class == 0:
            return
        for c in class_ids:
            pool = list(train_rows_by_class[c])
            self._rows[c] = sorted(rng.sample(pool, min(self.per_class, len(pool))))

    def state_dict(self) -> dict:
        return {"per_class": self.per_class, "rows": {str(c): list(r) for c, r in self._rows.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        self.per_class = int(state["per_class"])
        self._rows = {int(c): [int(x) for x in r] for c, r in state["rows"].items()}
