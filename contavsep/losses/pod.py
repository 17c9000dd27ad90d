"""Local POD distillation (PLOP) of intermediate feature maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pod_loss(new_feats: Sequence[torch.Tensor], old_feats: Sequence[torch.Tensor], scales: int = 3) -> torch.Tensor:
    """Local POD distillation (PLOP, Douillard et al. CVPR 2021) between new and old feature maps.

    For each layer, activations are squared (as PODNet/PLOP do: pooling energy, so signed
    activations such as a LeakyReLU U-Net's do not cancel in the mean). For each scale
    s = 0 .. scales-1 the map is cut into a 2^s x 2^s grid of windows (``torch.tensor_split``:
    near-equal windows that cover every pixel; a side shorter than 2^s gets one window per
    pixel, so small deep layers never produce empty windows). Each window contributes its
    width-pooled (mean over W: C x h values) and height-pooled (mean over H: C x w values)
    vectors. All of them, over all windows and scales, are concatenated into one descriptor
    Phi per sample, which is L2-normalised. The layer loss is the Euclidean distance
    ||Phi_new - Phi_old||_2 averaged over the batch; the result is the mean over layers.
    The old maps are detached (frozen teacher).

    Args:
        new_feats: intermediate feature maps of the model being trained.
        old_feats: the same layers of the frozen old model.
        scales: number of pyramid levels (PLOP: 3, windows 1, 2x2, 4x4).

    Returns:
        Scalar loss (float32), 0 for identical features.

    Shape:
        - new_feats[l]: :math:`(B, C_l, H_l, W_l)`
        - old_feats[l]: same as new_feats[l]
        - output: :math:`()`
    """
    if scales < 1:
        raise ValueError(f"scales must be >= 1, got {scales}")
    if len(new_feats) == 0 or len(new_feats) != len(old_feats):
        raise ValueError(
            f"need the same non-zero number of new and old layers, got {len(new_feats)} and {len(old_feats)}"
        )
    total: torch.Tensor | None = None
    for index, (new, old) in enumerate(zip(new_feats, old_feats)):
        if new.dim() != 4 or new.shape != old.shape:
            raise ValueError(
                f"layer {index}: new {tuple(new.shape)} and old {tuple(old.shape)} must be equal (B, C, H, W)"
            )
        phi_new = F.normalize(_local_pod_descriptor(new.float().pow(2), scales), dim=-1)
        phi_old = F.normalize(_local_pod_descriptor(old.detach().float().pow(2), scales), dim=-1)
        layer = (phi_new - phi_old).norm(dim=-1).mean()
        total = layer if total is None else total + layer
    assert total is not None  # at least one layer, checked above
    return total / len(new_feats)


# ----------------------------------------------------------------------------- private helpers


def _local_pod_descriptor(x: torch.Tensor, scales: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, P): width- and height-pooled windows of a 2^s spatial pyramid."""
    batch, _, height, width = x.shape
    pieces: list[torch.Tensor] = []
    for level in range(scales):
        splits = 2**level
        for band in torch.tensor_split(x, min(splits, height), dim=2):
            for window in torch.tensor_split(band, min(splits, width), dim=3):
                pieces.append(window.mean(dim=3).reshape(batch, -1))  # width-pooled (C, h)
                pieces.append(window.mean(dim=2).reshape(batch, -1))  # height-pooled (C, w)
    return torch.cat(pieces, dim=1)
