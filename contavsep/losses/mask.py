"""The separator's loss and output-mask distillation: weighted L1 between masks (``L_main``,
``L_dist``), and the checks and selection of flagged (memory) sources that
:mod:`contavsep.losses.attention` shares."""

from __future__ import annotations

import torch


def weighted_l1_mask_loss(est_masks: torch.Tensor, target_masks: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between estimated and target masks (Sound-of-Pixels / iQuery ``L_main``).

    ``mean(weight * |est_masks - target_masks|)`` over all B * N * F * T elements, which equals
    the mean over sources of the per-source weighted L1 (as the reference code averages over
    the N sources).

    Args:
        est_masks: sigmoid masks predicted on the warped grid.
        target_masks: ratio-mask targets |X_n| / |X_mix| clamped to [0, mask_max].
        weight: per-bin weight clamp(log1p(|X_mix|), weight_min, weight_max), broadcast over
            sources.

    Returns:
        Scalar loss (float32).

    Shape:
        - est_masks: :math:`(B, N, F, T)`
        - target_masks: :math:`(B, N, F, T)`
        - weight: :math:`(B, 1, F, T)` or :math:`(B, N, F, T)` (anything broadcastable to
          est_masks' shape without enlarging it)
        - output: :math:`()`
    """
    if est_masks.shape != target_masks.shape:
        raise ValueError(f"est_masks {tuple(est_masks.shape)} and target_masks {tuple(target_masks.shape)} differ")
    _check_broadcast_weight(weight, est_masks.shape)
    diff = (est_masks.float() - target_masks.float()).abs()
    return (weight.float() * diff).mean()


def mask_distillation_loss(
    new_masks: torch.Tensor,
    old_masks: torch.Tensor,
    weight: torch.Tensor,
    flags: torch.Tensor,
) -> torch.Tensor:
    """Output-mask distillation ``L_dist``: weighted L1 between new and old masks on flagged sources.

    With S = {(b, n) : flags[b, n]} the flagged (memory) sources,

    ``L_dist = 1 / (|S| F T) * sum_{(b,n) in S} sum_{f,t} weight[b,f,t] * |new[b,n,f,t] - old[b,n,f,t]|``

    i.e. :func:`weighted_l1_mask_loss` restricted to memory sources, with the old model's masks
    as the target. ``old_masks`` is detached (the old model is a frozen teacher). When nothing
    is flagged the result is an exact zero that is still connected to ``new_masks``' graph, so
    ``backward()`` and DDP gradient bucketing behave the same on every batch.

    Args:
        new_masks: masks of the model being trained.
        old_masks: masks of the frozen old model, either for all sources (same shape as
            ``new_masks``) or only for the flagged ones, in row-major order of ``flags`` (so
            the strategy may run the old model on memory sources only).
        weight: the same per-bin weight as the main loss.
        flags: True where the source is a memory (old-class) clip.

    Returns:
        Scalar loss (float32).

    Shape:
        - new_masks: :math:`(B, N, F, T)`
        - old_masks: :math:`(B, N, F, T)` or :math:`(S, F, T)` with S = flags.sum()
        - weight: :math:`(B, 1, F, T)` or :math:`(B, N, F, T)`
        - flags: :math:`(B, N)` bool
        - output: :math:`()`
    """
    if new_masks.dim() != 4:
        raise ValueError(f"new_masks must be (B, N, F, T), got {tuple(new_masks.shape)}")
    _check_flags(flags, new_masks.shape[:2])
    _check_broadcast_weight(weight, new_masks.shape)
    flags = flags.to(new_masks.device)
    new_sel = new_masks[flags].float()  # (S, F, T)
    old_sel = _select_flagged(old_masks, flags, new_masks.shape).detach().float()
    weight_sel = weight.expand(new_masks.shape)[flags].float()
    per_bin = weight_sel * (new_sel - old_sel).abs()
    # Clamp the count so an empty selection gives sum([]) / 1 = 0 with a grad_fn, not NaN.
    count = max(new_sel.numel(), 1)
    return per_bin.sum() / count


# ----------------------------------------------------------------------------- private helpers


def _check_broadcast_weight(weight: torch.Tensor, shape: torch.Size) -> None:
    try:
        broadcast = torch.broadcast_shapes(weight.shape, shape)
    except RuntimeError as err:
        raise ValueError(f"weight {tuple(weight.shape)} does not broadcast to masks {tuple(shape)}") from err
    if broadcast != shape:
        raise ValueError(f"weight {tuple(weight.shape)} would enlarge masks {tuple(shape)}")


def _check_flags(flags: torch.Tensor, leading: torch.Size) -> None:
    if flags.dtype != torch.bool:
        raise TypeError(f"flags must be a bool tensor, got {flags.dtype}")
    if flags.shape != leading:
        raise ValueError(f"flags must be {tuple(leading)} (B, N), got {tuple(flags.shape)}")


def _select_flagged(old: torch.Tensor, flags: torch.Tensor, new_shape: torch.Size) -> torch.Tensor:
    """Old-model values of the flagged sources: index a full tensor, or accept a preselected one."""
    num_flagged = int(flags.sum())
    if old.shape == new_shape:
        return old[flags.to(old.device)]
    if old.shape == (num_flagged, *new_shape[2:]):
        return old
    raise ValueError(
        f"old tensor must be {tuple(new_shape)} or ({num_flagged}, {', '.join(map(str, new_shape[2:]))}), got {tuple(old.shape)}"
    )
