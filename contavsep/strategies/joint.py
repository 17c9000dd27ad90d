"""Joint training: the upper bound of continual learning.

At step ``t`` the model trains on the training data of every class seen so far (tasks 0..t),
so nothing is forgotten by construction; it shows how far the continual strategies are from
training without the incremental constraint (the "Upper Bound" row of the ContAV-Sep paper's
Table 1, Pian et al., NeurIPS 2024). It continues from the previous step's model, like every
other strategy, and adds no loss term; memory clips, if any, are already part of the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from contavsep.scenario import Scenario
from contavsep.strategies.base import Strategy


class Joint(Strategy):
    """Draws the training data of all seen classes at every step; no extra loss term."""

    name: ClassVar[str] = "joint"
    first_step: ClassVar[str] = "plain"  # step 0 draws task 0 only, like fine-tuning

    def train_class_ids(self, step: int, scenario: Scenario) -> Sequence[int]:
        """Dataset class ids of all tasks ``0 .. step``."""
        return scenario.seen_class_ids(step)
