"""ContAV-Sep (Pian et al., "Continual Audio-Visual Sound Separation", NeurIPS 2024).

``L = L_main + lambda_dist * L_dist + lambda_ins * L_ins + lambda_cls * L_cls``:

- CrossSDC (``L_ins``, ``L_cls``, :func:`contavsep.losses.cross_sdc`, temperature tau): the
  separated-sound, object and motion features of every source of the batch form instance-aware
  (same clip) and class-aware (same class) cross-modal contrastive terms. From step 1 on, the
  frozen old model's features of the *memory* sources join as fixed anchors (extra candidates,
  detached), so the new model's features of old classes are pulled towards the old model's
  cross-modal similarity structure: this is the "distillation" in CrossSDC. CrossSDC applies at
  every step: at step 0 (and on a batch without memory sources) on the current model's features
  alone, as in the reference code. ``strategy.crosssdc_form`` picks where the anchors go:
  ``anchors`` (default, the documented protocol) adds them as extra columns (keys) only;
  ``reference`` adds them as rows (queries) and columns, as the official ContAV-Sep code does
  (see :func:`contavsep.losses.cross_sdc`). Without memory sources the two forms are the same.
- Output-mask distillation (``L_dist``, :func:`contavsep.losses.mask_distillation_loss`): weighted
  L1 between the current and the old model's masks on memory sources only.

The old model runs once per batch, under ``no_grad``, on the memory sources only (each as a
one-source mixture; see :mod:`contavsep.strategies.subset`): it has queries for them, and it
gives both the anchors and the distillation targets. Paper defaults: lambda_ins 0.1,
lambda_cls 0.3, lambda_dist 0.3, tau 0.05, 1 exemplar per class (``memory.per_class``).

Loss terms ``ins``, ``cls``, ``dist`` (weighted); ``dist`` is a graph-attached zero without memory
sources or old model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from contavsep.config import StrategyParams, bounded, one_of
from contavsep.losses import (
    CROSS_SDC_FORMS,
    FeatureSet,
    cross_sdc,
    mask_distillation_loss,
)
from contavsep.models.output import SeparatorOutput
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy
from contavsep.strategies.subset import memory_flags, old_outputs_on


@dataclass(frozen=True)
class ContAVSepParams(StrategyParams):
    lambda_ins: float = bounded(0.1, at_least=0)  # CrossSDC instance-aware term weight
    lambda_cls: float = bounded(0.3, at_least=0)  # CrossSDC class-aware term weight
    lambda_dist: float = bounded(0.3, at_least=0)  # output-mask distillation weight (memory sources)
    temperature: float = bounded(0.05, above=0)  # InfoNCE temperature tau
    crosssdc_form: str = one_of(
        "anchors", CROSS_SDC_FORMS
    )  # old features as CrossSDC keys only (anchors) | keys + queries (reference)


def features_of(out: SeparatorOutput) -> FeatureSet:
    """The CrossSDC features (separated sound, object, motion) of every source of a model output.

    Shape: every field :math:`(B, N, D_f)`; motion ``None`` for Co-Separation.
    """
    return FeatureSet(audio=out.audio_features, object=out.object_features, motion=out.motion_features)


class ContAVSep(Strategy):
    """CrossSDC with old-model anchors for memory clips + output-mask distillation on memory."""

    name: ClassVar[str] = "contavsep"
    Params: ClassVar[type[StrategyParams]] = ContAVSepParams

    def loss_terms(self, batch: StepBatch, out: SeparatorOutput, ctx: StepContext) -> dict[str, torch.Tensor]:
        p = self.params
        clips = batch.clips
        flags = memory_flags(batch, ctx)
        old = old_outputs_on(ctx, batch, flags)
        if old is None:
            # No anchors: both CrossSDC forms are the same loss.
            ins, cls = cross_sdc(features_of(out), clips.labels, clips.rows, p.temperature)
            old_masks = out.masks.new_zeros((0, *out.masks.shape[2:]))
        else:
            ins, cls = cross_sdc(
                features_of(out),
                clips.labels,
                clips.rows,
                p.temperature,
                anchors=features_of(old),
                anchor_labels=clips.labels[flags],
                anchor_clip_ids=clips.rows[flags],
                form=p.crosssdc_form,
            )
            old_masks = old.masks[:, 0]
        dist = mask_distillation_loss(out.masks, old_masks, batch.spectra.weight, flags)
        return {"ins": p.lambda_ins * ins, "cls": p.lambda_cls * cls, "dist": p.lambda_dist * dist}
