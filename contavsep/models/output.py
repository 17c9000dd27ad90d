"""The separator contract: what ``forward`` accepts (checked) and the result it returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SeparatorOutput:
    """Masks and the features that losses and continual-learning strategies read.

    Shape:
        - masks: :math:`(B, N, F, T)` sigmoid masks on the (warped) network grid, one per source.
        - audio_features: :math:`(B, N, D_f)` feature of each separated sound (CrossSDC).
        - object_features: :math:`(B, N, D_f)` projected object feature of each source (CrossSDC).
        - motion_features: :math:`(B, N, D_f)` projected motion feature, or ``None`` for a
          separator that does not read motion (coseparation).
        - attention: :math:`(B, N, H, L)` audio-visual cross-attention of the last decoder layer
          for the query that produced each mask (``H`` heads over ``L`` latent tokens, each row
          sums to 1); only with ``return_internals=True`` and only for attention-based
          separators, else ``None``.
        - unet_features: U-Net feature maps, encoder (outermost first) then decoder (innermost
          first), each :math:`(B', C, H, W)`; ``B' = B`` where a map depends on the mixture only
          and ``B' = B N`` (sources of a mixture adjacent) where it is conditioned on the source.
          Only with ``return_internals=True``, else ``None``.

    ``D_f`` is ``ModelConfig.feature_dim``. Masks, features and attention are float32, also
    under bf16 autocast (U-Net maps keep the autocast dtype).
    """

    masks: Tensor
    audio_features: Tensor
    object_features: Tensor
    motion_features: Tensor | None = None
    attention: Tensor | None = None
    unet_features: tuple[Tensor, ...] | None = None


def check_separator_inputs(
    mix_input: Tensor,
    class_ids: Tensor,
    object_features: Tensor,
    motion_features: Tensor | None,
    *,
    object_dim: int,
    motion_shape: tuple[int, int] | None,
    num_classes: int | None,
) -> None:
    """Raise ``ValueError`` naming the offending argument unless the inputs fit the contract.

    Args:
        motion_shape: expected ``(motion_tokens, motion_dim)``; ``None`` if motion is not read
            (then ``motion_features`` may be ``None``).
        num_classes: class ids must lie in ``[0, num_classes)``; ``None`` if ids are not read.

    Shape:
        - mix_input: :math:`(B, 1, F, T)`; class_ids: :math:`(B, N)` integer;
          object_features: :math:`(B, N, D_o)`; motion_features: :math:`(B, N, T_m, D_m)`.
    """
    if mix_input.dim() != 4 or mix_input.shape[1] != 1:
        raise ValueError(f"mix_input must be (B, 1, F, T), got {tuple(mix_input.shape)}")
    b = mix_input.shape[0]
    if class_ids.dim() != 2 or class_ids.shape[0] != b or class_ids.is_floating_point():
        raise ValueError(
            f"class_ids must be an integer (B={b}, N) tensor, got {class_ids.dtype} {tuple(class_ids.shape)}"
        )
    n = class_ids.shape[1]
    if tuple(object_features.shape) != (b, n, object_dim):
        raise ValueError(
            f"object_features must be (B, N, object_dim) = {(b, n, object_dim)}, got {tuple(object_features.shape)}"
        )
    if motion_shape is not None:
        expected = (b, n, *motion_shape)
        if motion_features is None or tuple(motion_features.shape) != expected:
            got = None if motion_features is None else tuple(motion_features.shape)
            raise ValueError(f"motion_features must be (B, N, motion_tokens, motion_dim) = {expected}, got {got}")
    # The range check reads the ids on the host: on an accelerator that is a sync per forward
    # and under torch.compile a graph break, so it runs eagerly on CPU tensors only (elsewhere an
    # out-of-range id trips one_hot's device assert).
    on_host = class_ids.device.type == "cpu" and not torch.compiler.is_compiling()
    if num_classes is not None and class_ids.numel() and on_host:
        low, high = int(class_ids.min()), int(class_ids.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"class_ids must lie in [0, {num_classes}) (the classes this model has queries for; "
                f"call expand_classes first), got values in [{low}, {high}]"
            )
