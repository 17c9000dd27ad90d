"""Endpoints Weight Fusion (Xiao et al., "Endpoints Weight Fusion for Class Incremental Semantic
Segmentation", CVPR 2023), for mask-based separation.

EWF trains the new model from the old one as usual, then replaces it by a point on the segment
between the two endpoints in weight space: ``theta = alpha * theta_old + (1 - alpha) * theta_new``
for every parameter the two models share, while the parameters of the new classes come from
the new model alone (``alpha = ewf_alpha``).

Adaptation to the separator, applied in ``after_task`` (so the fused model is the one evaluated
and copied as the next step's old model):

- shared weights: the whole U-Net, the transformer / fusion part, projections and heads;
- class queries (iQuery): the rows of classes the old model knows are fused, the rows of the
  classes added this step are taken from the new model;
- BatchNorm running mean / variance are fused with the same ``alpha`` (they describe the
  activations of weights that are themselves interpolated); integer buffers (batch counters)
  keep the new model's value.

The old endpoint is ``ctx.old_model``, the frozen copy of the model after the previous step,
i.e. exactly what a snapshot taken in ``before_task`` would hold (rows for the new classes
aside, which are not fused), without a second copy in memory or in the resumable state. At step
0 there is no old endpoint and nothing is fused. No loss term; training is plain fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from contavsep.config import StrategyParams, bounded
from contavsep.strategies.base import StepContext, Strategy


@dataclass(frozen=True)
class EWFParams(StrategyParams):
    ewf_alpha: float = bounded(
        0.5, at_least=0, at_most=1
    )  # weight of the old endpoint: theta = alpha * theta_old + (1 - alpha) * theta_new


@torch.no_grad()
def fuse_weights(model: nn.Module, old_model: nn.Module, alpha: float) -> None:
    """In place: ``model``'s shared weights <- ``alpha * old + (1 - alpha) * model``.

    A tensor of ``model`` that has more leading rows than its ``old_model`` counterpart (class
    queries grown by ``expand_classes``) is fused on the old rows only. Floating-point buffers
    are fused like parameters, integer buffers are left alone.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    old_tensors = {**dict(old_model.named_parameters()), **dict(old_model.named_buffers())}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        old = old_tensors.get(name)
        if old is None:
            raise ValueError(f"the old model has no '{name}': cannot fuse different architectures")
        if not tensor.is_floating_point():
            continue
        grown = old.dim() == tensor.dim() >= 1 and old.shape[1:] == tensor.shape[1:] and old.shape[0] <= tensor.shape[0]
        if old.shape != tensor.shape and not grown:
            raise ValueError(f"cannot fuse '{name}': old shape {tuple(old.shape)}, new shape {tuple(tensor.shape)}")
        shared = tensor[: old.shape[0]] if old.dim() else tensor
        shared.mul_(1.0 - alpha).add_(old.to(device=shared.device, dtype=shared.dtype), alpha=alpha)


class EWF(Strategy):
    """Fuses the trained model with the previous step's model after each step."""

    name: ClassVar[str] = "ewf"
    first_step: ClassVar[str] = "plain"  # fusion starts after step 1
    Params: ClassVar[type[StrategyParams]] = EWFParams

    def after_task(self, ctx: StepContext) -> None:
        if ctx.old_model is None:
            if ctx.step > 0:
                raise ValueError(f"ewf needs the previous step's model at step {ctx.step}, but ctx.old_model is None")
            return
        fuse_weights(ctx.model, ctx.old_model, self.params.ewf_alpha)
