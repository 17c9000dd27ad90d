"""Fine-tuning: the lower bound of continual learning.

Each step trains the previous step's model on the new classes' data (plus memory, when there is
one) with the separation loss alone. Nothing counters forgetting except rehearsal of the memory
clips, so this is the reference every other strategy is measured against (the "Fine-tuning"
row of the ContAV-Sep paper's Table 1, Pian et al., NeurIPS 2024).
"""

from __future__ import annotations

from typing import ClassVar

from contavsep.strategies.base import Strategy


class FineTune(Strategy):
    """No extra loss term and no state: only the hooks' no-op defaults."""

    name: ClassVar[str] = "finetune"
    first_step: ClassVar[str] = "plain"
