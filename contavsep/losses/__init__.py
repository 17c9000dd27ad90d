"""Loss terms of the separator and of the continual-learning strategies.

Pure tensor functions: they take model outputs and targets, return scalar tensors, and hold no
state. Strategies pick and weight them; the ContAV-Sep total is
``L = L_main + lambda_dist * L_dist + lambda_ins * L_ins + lambda_cls * L_cls`` where

- ``L_main``  = :func:`weighted_l1_mask_loss` (Sound-of-Pixels / iQuery weighted L1),
- ``L_dist``  = :func:`mask_distillation_loss` (new vs old model masks on memory sources),
- ``L_ins``, ``L_cls`` = :func:`cross_sdc` (Cross-modal Similarity Distillation Constraint).

Helpers for other strategies: :func:`pod_loss` (PLOP local POD) and
:func:`attention_distillation` (AV-CIL attention-map distillation).

Every function computes in float32 whatever the input dtype, so bf16 autocast on the model does
not degrade the loss (softmax over logits / tau with tau = 0.05 and long reductions are where
bf16 hurts).

Naming: ``B`` mixtures, ``N`` sources per mixture, ``F x T`` the (warped) spectrogram grid,
``M`` = B * N flattened source items, ``K`` old-model anchor items, ``D`` feature size.

Modules, one per loss family:

- :mod:`contavsep.losses.mask` -- :func:`weighted_l1_mask_loss` and :func:`mask_distillation_loss`.
- :mod:`contavsep.losses.crosssdc` -- :class:`FeatureSet`, :func:`multi_positive_info_nce`,
  :func:`cross_sdc` and ``CROSS_SDC_FORMS``, with the clip-id helpers.
- :mod:`contavsep.losses.pod` -- :func:`pod_loss`.
- :mod:`contavsep.losses.attention` -- :func:`attention_distillation`.
"""

from contavsep.losses.attention import attention_distillation
from contavsep.losses.crosssdc import CROSS_SDC_FORMS, FeatureSet, cross_sdc, multi_positive_info_nce
from contavsep.losses.mask import mask_distillation_loss, weighted_l1_mask_loss
from contavsep.losses.pod import pod_loss

__all__ = [
    "FeatureSet",
    "weighted_l1_mask_loss",
    "mask_distillation_loss",
    "multi_positive_info_nce",
    "CROSS_SDC_FORMS",
    "cross_sdc",
    "pod_loss",
    "attention_distillation",
]
