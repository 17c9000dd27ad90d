"""PLOP (Douillard et al., "PLOP: Learning without Forgetting for Continual Semantic
Segmentation", CVPR 2021), for mask-based separation.

PLOP keeps the spatial statistics of the old model's intermediate features with Local POD: at
several scales, each feature map is cut into windows whose width- and height-pooled activations
form a descriptor, and the distance between the new and the old model's descriptors is
penalised (:func:`contavsep.losses.pod_loss`, ``pod_scales`` pyramid levels).

Adaptation to the separator: the "backbone" whose features are distilled is the spectrogram
U-Net, the part both separators share and where the time-frequency structure of the mixture
lives. Every encoder map and every decoder map (the last one being the mask features) of the
current model (``return_internals=True``) is compared with the same map of the frozen old model
on the same batch; the loss is the mean over maps. The U-Net maps do not depend on the class
query, so an old iQuery model, which has no query for the new classes, is run with those sources
relabelled to class 0: its U-Net maps are the same whatever the label. No class-count-adaptive
factor on ``lambda_pod`` (the weight is a searched value).

PLOP's second half, pseudo-labelling, has no counterpart here: it fills the *background* class
of a new step's segmentation targets with the old model's confident old-class predictions,
because old classes are unlabelled in new images. A separation target is the ratio mask of each
source of the mixture, known exactly from the mix-and-separate construction; there is no
background class and no missing label to fill.

Loss term ``pod`` = ``lambda_pod * L_pod``; a graph-attached zero at step 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from contavsep.config import StrategyParams, bounded
from contavsep.losses import pod_loss
from contavsep.models.output import SeparatorOutput
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy
from contavsep.strategies.subset import known_to, with_labels


@dataclass(frozen=True)
class PLOPParams(StrategyParams):
    lambda_pod: float = bounded(0.01, at_least=0)  # weight of the local POD distillation
    pod_scales: int = bounded(3, at_least=1)  # pyramid levels of local POD (windows 1, 2x2, 4x4, ...)


class PLOP(Strategy):
    """Multi-scale local POD between the current and the old model's U-Net feature maps."""

    name: ClassVar[str] = "plop"
    first_step: ClassVar[str] = "plain"
    first_step_zero_terms: ClassVar[tuple[str, ...]] = ("pod",)
    Params: ClassVar[type[StrategyParams]] = PLOPParams
    needs_internals: ClassVar[bool] = True

    def wants_internals(self, ctx: StepContext) -> bool:
        # the U-Net maps only matter against an old model's; without one (step 0) the plain
        # forward keeps step 0 bit-identical to fine-tuning's (a shared first step)
        return ctx.old_model is not None

    def loss_terms(self, batch: StepBatch, out: SeparatorOutput, ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.old_model is None:
            return {"pod": out.masks.sum() * 0.0}
        if out.unet_features is None:
            raise ValueError(
                "plop needs the U-Net feature maps: the engine must call the model with return_internals=True"
            )
        labels = batch.clips.labels
        # The U-Net never reads the label: any query the old model has gives the same maps.
        old_labels = torch.where(known_to(ctx.old_model, labels), labels, torch.zeros_like(labels))
        with torch.no_grad():
            old_out = ctx.forward(ctx.old_model, with_labels(batch, old_labels), True)
        pod = pod_loss(out.unet_features, old_out.unet_features, self.params.pod_scales)
        return {"pod": self.params.lambda_pod * pod}
