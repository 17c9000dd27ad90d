"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), for mask-based separation.

LwF keeps the outputs of the old model's heads on the new data: in classification, every image
of the batch is passed through the frozen old network and the new network's *old-class* logits
are distilled towards it; the new-class head is left free.

The separator's "heads" are the class queries: a source's mask is the output of the query of its
class. The adaptation, per source of the batch:

- a source whose class the old model knows (memory clips; every source for Co-Separation, which
  reads no class id): the current mask, from the engine's forward pass, is distilled towards the
  old model's mask for the same query;
- a source of a new class (the old iQuery model has no query for it): it is queried instead with
  an old class drawn uniformly at random, in both models, and the current model's mask for that
  old query is distilled towards the old model's. This is LwF's "old heads on new data": the
  expectation over the draw is the mean over all old heads (as LwF distils all old logits), at
  the cost of one head per source and iteration instead of all of them. The masks of the new
  classes' queries are never distilled (the new query rows still receive gradient through the
  queries' self-attention, which every iQuery source runs over all class queries).

Rejected alternatives: distilling the new-class mask towards the old model's answer on a zero or
mean query row would constrain the *new* head, which LwF leaves free, and would pull it away from
the ground truth the main loss asks for; distilling only the sources the old model knows makes
LwF a no-op without memory at every step > 0 (all sources are then of new classes), and a
mixture-level U-Net feature term is PLOP's POD rather than LwF's output distillation.

Loss term ``dist`` = ``lambda_dist * L_dist`` with L_dist the weighted L1 of
:func:`contavsep.losses.mask_distillation_loss` over all sources of the batch. Cost: when a
batch has a new-class source, one extra forward/backward of the current model on the batch with
the substituted queries (and one no-grad forward of the old model); its BatchNorm layers then
update their running statistics twice per iteration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from contavsep.config import StrategyParams, bounded
from contavsep.losses import mask_distillation_loss
from contavsep.models.output import SeparatorOutput
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy
from contavsep.strategies.subset import known_to, with_labels


@dataclass(frozen=True)
class LwFParams(StrategyParams):
    lambda_dist: float = bounded(0.3, at_least=0)  # weight of the output-mask distillation on all sources


class LwF(Strategy):
    """Output-mask distillation from the frozen old model on every source of the batch.

    State: the generator that draws the old queries of new-class sources (resumable).
    """

    name: ClassVar[str] = "lwf"
    first_step: ClassVar[str] = "plain"
    first_step_zero_terms: ClassVar[tuple[str, ...]] = ("dist",)
    Params: ClassVar[type[StrategyParams]] = LwFParams

    def __init__(self, params: LwFParams):
        super().__init__(params)
        self._generator = torch.Generator()

    def before_task(self, ctx: StepContext) -> None:
        # One fixed stream per step: a rerun of a step draws the same old queries.
        self._generator.manual_seed(ctx.step)

    def old_queries(self, labels: torch.Tensor, known: torch.Tensor, old_num_classes: int) -> torch.Tensor:
        """Labels to query both models with: a source's own class if the old model knows it,
        otherwise an old class drawn uniformly from ``0 .. old_num_classes - 1``.

        Shape:
            - labels, known: :math:`(B, N)` (integer, bool)
            - output: :math:`(B, N)` integer, every entry ``< old_num_classes`` where not known
        """
        drawn = torch.randint(0, old_num_classes, tuple(labels.shape), generator=self._generator)
        return torch.where(known, labels, drawn.to(device=labels.device, dtype=labels.dtype))

    def loss_terms(self, batch: StepBatch, out: SeparatorOutput, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.old_model is None:
            # Nothing to distil at step 0; a zero on the masks' graph keeps the term's name logged.
            return {"dist": out.masks.sum() * 0.0}
        labels = batch.clips.labels
        known = known_to(ctx.old_model, labels)
        if bool(known.all()):
            queried, student_masks = batch, out.masks
        else:
            queried = with_labels(batch, self.old_queries(labels, known, ctx.old_model.num_classes))
            student_masks = ctx.forward(ctx.model, queried, False).masks
        with torch.no_grad():
            teacher_masks = ctx.forward(ctx.old_model, queried, False).masks
        every_source = torch.ones_like(known)
        dist = mask_distillation_loss(student_masks, teacher_masks, batch.spectra.weight, every_source)
        return {"dist": self.params.lambda_dist * dist}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"generator"}:
            raise ValueError(f"lwf state must have the key 'generator', got {sorted(state)}")
        self._generator.set_state(state["generator"])
