"""AV-CIL (Pian et al., "Audio-Visual Class-Incremental Learning", ICCV 2023), adapted to
separation as in the ContAV-Sep paper's comparison (Pian et al., NeurIPS 2024).

AV-CIL fights forgetting in audio-visual classification with (1) instance- and class-aware
audio-visual similarity constraints, (2) distillation of the old model's audio-visual attention
maps, and (3) knowledge distillation of the old model's outputs. For the separator:

- (1) CrossSDC-style contrastive terms (:func:`contavsep.losses.cross_sdc`, lambda_ins,
  lambda_cls, tau) on the *current* model's separated-sound / object / motion features only: AV-CIL
  has no old-model anchors (those are what ContAV-Sep adds), so ``strategy.crosssdc_form`` (where
  the anchors go) does not apply here.
- (2) :func:`contavsep.losses.attention_distillation` (KL of old || new, lambda_att) of the
  audio-visual cross-attention of the last decoder layer for each memory source's query
  (``SeparatorOutput.attention``, ``needs_internals``), between the current and the frozen old
  model. The old model only has queries of old classes, hence memory sources only.
- (3) Output-mask distillation on memory sources (lambda_dist), the separator's counterpart of
  the classifier's logit distillation.

A separator without attention maps (Co-Separation) has nothing to distil in (2): the ``att`` term
is then a graph-attached zero, and AV-CIL reduces to (1) + (3) on that model.

Loss terms ``ins``, ``cls``, ``att``, ``dist`` (weighted); ``att`` and ``dist`` are graph-attached
zeros without memory sources or old model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from contavsep.config import StrategyParams, bounded
from contavsep.losses import attention_distillation, cross_sdc, mask_distillation_loss
from contavsep.models.output import SeparatorOutput
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy
from contavsep.strategies.contavsep import features_of
from contavsep.strategies.subset import memory_flags, old_outputs_on


@dataclass(frozen=True)
class AVCILParams(StrategyParams):
    lambda_ins: float = bounded(0.1, at_least=0)  # instance-aware audio-visual contrastive term weight
    lambda_cls: float = bounded(0.3, at_least=0)  # class-aware audio-visual contrastive term weight
    temperature: float = bounded(0.05, above=0)  # InfoNCE temperature tau
    lambda_att: float = bounded(1.0, at_least=0)  # attention-map distillation weight (memory sources)
    lambda_dist: float = bounded(0.3, at_least=0)  # output-mask distillation weight (memory sources)


class AVCIL(Strategy):
    """Contrastive terms on the current model + attention and mask distillation on memory."""

    name: ClassVar[str] = "avcil"
    Params: ClassVar[type[StrategyParams]] = AVCILParams
    needs_internals: ClassVar[bool] = True

    def loss_terms(self, batch: StepBatch, out: SeparatorOutput, ctx: StepContext) -> dict[str, torch.Tensor]:
        p = self.params
        clips = batch.clips
        ins, cls = cross_sdc(features_of(out), clips.labels, clips.rows, p.temperature)
        flags = memory_flags(batch, ctx)
        attention = out.attention
        old = old_outputs_on(ctx, batch, flags, return_internals=attention is not None)
        if old is None:
            old_masks = out.masks.new_zeros((0, *out.masks.shape[2:]))
        else:
            old_masks = old.masks[:, 0]
        dist = mask_distillation_loss(out.masks, old_masks, batch.spectra.weight, flags)
        if attention is None:
            att = out.masks.sum() * 0.0
        elif old is None:
            att = attention_distillation(attention, attention.new_zeros((0, *attention.shape[2:])), flags)
        else:
            # the old model ran with return_internals, so it returned its attention too
            assert old.attention is not None
            att = attention_distillation(attention, old.attention[:, 0], flags)
        return {
            "ins": p.lambda_ins * ins,
            "cls": p.lambda_cls * cls,
            "att": p.lambda_att * att,
            "dist": p.lambda_dist * dist,
        }
