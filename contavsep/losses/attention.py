"""Attention-map distillation (AV-CIL) on flagged (memory) sources."""

from __future__ import annotations

import torch

from contavsep.losses.mask import _check_flags, _select_flagged


def attention_distillation(
    new_att: torch.Tensor,
    old_att: torch.Tensor,
    flags: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Attention-map distillation (AV-CIL, Pian et al. ICCV 2023) on flagged (memory) sources.

    The last dimension holds attention distributions (softmax weights, rows sum to 1). Per
    attention row r of a source, KL(old || new) = sum_l old_l (log old_l - log new_l); as in
    AV-CIL, the row KLs are summed over all rows of a source (heads, queries, ...) and averaged
    over flagged sources:

    ``L_att = 1/|S| sum_{(b,n) in S} sum_r KL(old[b,n,r,:] || new[b,n,r,:])``

    KL rather than L1 because the maps are distributions and KL(old||new) is what AV-CIL
    distils. ``0 log 0`` is taken as 0 and ``new`` is clamped to ``eps`` inside the log. Old
    maps are detached. Nothing flagged gives a zero connected to ``new_att``'s graph.

    Args:
        new_att: attention weights of the model being trained.
        old_att: attention weights of the frozen old model, for all sources (same shape as
            ``new_att``) or only for the flagged ones (row-major order of ``flags``).
        flags: True where the source is a memory (old-class) clip.
        eps: floor of ``new_att`` inside the log.

    Returns:
        Scalar loss (float32), 0 when the maps agree.

    Shape:
        - new_att: :math:`(B, N, *, L)`
        - old_att: :math:`(B, N, *, L)` or :math:`(S, *, L)` with S = flags.sum()
        - flags: :math:`(B, N)` bool
        - output: :math:`()`
    """
    if new_att.dim() < 3:
        raise ValueError(f"new_att must be (B, N, *, L), got {tuple(new_att.shape)}")
    _check_flags(flags, new_att.shape[:2])
    flags = flags.to(new_att.device)
    new_sel = new_att[flags].float()  # (S, *, L)
    old_sel = _select_flagged(old_att, flags, new_att.shape).detach().float()
    kl = torch.xlogy(old_sel, old_sel) - old_sel * new_sel.clamp_min(eps).log()
    return kl.sum() / max(new_sel.shape[0], 1)
