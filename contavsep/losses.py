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
"""

from __future__ import annotations

import numbers
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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

# Where CrossSDC puts the old model's features (strategy.crosssdc_form): "anchors" = extra
# columns (keys) only, the documented default; "reference" = rows and columns, as the official
# ContAV-Sep code.
CROSS_SDC_FORMS = ("anchors", "reference")

# Clip identities: an integer tensor (any shape, M elements in row-major order) or a (possibly
# nested, e.g. B lists of N) sequence of str / int clip ids.
ClipIds = torch.Tensor | Sequence[Any]



@dataclass(frozen=True)
class FeatureSet:
    """The CrossSDC features of a set of source items, one row per item in every modality.

    Attributes:
        audio: features of the separated audio of each source.
        object: features of the detected sounding object of each source.
        motion: features of the motion of each source; ``None`` for models without a motion
            stream (Co-Separation), in which case only the (audio, object) pair is used.

    Shape:
        - every field: :math:`(B, N, D)` or :math:`(M, D)` (any leading dims, flattened
          row-major to :math:`(M, D)`); all fields have the same number of items.
    """

    audio: torch.Tensor
    object: torch.Tensor
    motion: torch.Tensor | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """The modality pairs CrossSDC averages over, in a fixed order."""
        if self.motion is None:
            return [("audio", "object")]
        return [("audio", "object"), ("audio", "motion"), ("motion", "object")]

    def flat(self, name: str) -> torch.Tensor:
        """Modality ``name`` as a float32 :math:`(M, D)` matrix."""
        feats = getattr(self, name)
        if feats is None:
            raise ValueError(f"FeatureSet has no '{name}' features")
        if feats.dim() < 2:
            raise ValueError(f"FeatureSet.{name} must be (..., D), got shape {tuple(feats.shape)}")
        return feats.reshape(-1, feats.shape[-1]).float()

    def num_items(self) -> int:
        """Number of items :math:`M`; raises if the modalities disagree."""
        counts: dict[str, int] = {}
        for name in ("audio", "object", "motion"):
            feats = getattr(self, name)
            if feats is not None:
                if feats.dim() < 2:
                    raise ValueError(f"FeatureSet.{name} must be (..., D), got shape {tuple(feats.shape)}")
                counts[name] = feats.numel() // max(feats.shape[-1], 1)
        if len(set(counts.values())) != 1:
            raise ValueError(f"FeatureSet modalities have different item counts: {counts}")
        return next(iter(counts.values()))


def weighted_l1_mask_loss(
    est_masks: torch.Tensor, target_masks: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
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


def multi_positive_info_nce(
    query_feats: torch.Tensor,
    key_feats: torch.Tensor,
    positive_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """One direction of a multi-positive (SupCon-style) InfoNCE over L2-normalised features.

    With q_i = query_feats[i] / ||.||, k_j = key_feats[j] / ||.||, s_ij = <q_i, k_j> / tau,
    P(i) = {j : positive_mask[i, j]} and R = {i : |P(i)| > 0}:

    ``loss = 1/|R| sum_{i in R} -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_j exp(s_ij) )``

    The denominator runs over every key, positives included (InfoNCE, not the "negatives
    only" variant). Rows without a positive do not contribute; if no row has one the result
    is a zero connected to the inputs' graph.

    Args:
        query_feats: the rows (anchors of the softmax).
        key_feats: the candidates (columns).
        positive_mask: which (row, column) pairs are positives.
        temperature: tau > 0.

    Returns:
        Scalar loss (float32).

    Shape:
        - query_feats: :math:`(M, D)`
        - key_feats: :math:`(C, D)`
        - positive_mask: :math:`(M, C)` bool
        - output: :math:`()`
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query_feats.dim() != 2 or key_feats.dim() != 2 or query_feats.shape[1] != key_feats.shape[1]:
        raise ValueError(
            f"query_feats {tuple(query_feats.shape)} and key_feats {tuple(key_feats.shape)} must be (M, D) and (C, D)"
        )
    if positive_mask.shape != (query_feats.shape[0], key_feats.shape[0]) or positive_mask.dtype != torch.bool:
        raise ValueError(
            f"positive_mask must be a bool ({query_feats.shape[0]}, {key_feats.shape[0]}) tensor, "
            f"got {positive_mask.dtype} {tuple(positive_mask.shape)}"
        )
    device_type = query_feats.device.type
    # Autocast would recast the matmul to bf16 and lose the 1/tau = 20x logits' precision.
    with torch.autocast(device_type=device_type, enabled=False):
        q = F.normalize(query_feats.float(), dim=-1)
        k = F.normalize(key_feats.float(), dim=-1)
        log_prob = torch.log_softmax(q @ k.t() / temperature, dim=-1)  # (M, C)
        pos = positive_mask.to(log_prob.dtype)
        n_pos = pos.sum(dim=-1)  # (M,)
        has_pos = n_pos > 0
        # where() rather than multiply: a masked -inf would give NaN through 0 * -inf.
        pos_log_prob = torch.where(positive_mask, log_prob, torch.zeros_like(log_prob)).sum(dim=-1)
        row_loss = -pos_log_prob / n_pos.clamp_min(1.0)
        n_rows = has_pos.sum().clamp_min(1)
        return torch.where(has_pos, row_loss, torch.zeros_like(row_loss)).sum() / n_rows


def cross_sdc(
    current: FeatureSet,
    labels: torch.Tensor,
    clip_ids: ClipIds,
    temperature: float = 0.05,
    anchors: FeatureSet | None = None,
    anchor_labels: torch.Tensor | None = None,
    anchor_clip_ids: ClipIds | None = None,
    form: str = "anchors",
) -> tuple[torch.Tensor, torch.Tensor]:
    """CrossSDC: instance- and class-aware cross-modal contrastive terms ``(L_ins, L_cls)``.

    Items: the M current-model source items (rows of ``current``) and, optionally, K old-model
    anchor items (the frozen old model's features of the memory sources in the batch).

    For a modality pair (a, b), the direction a -> b uses the current a-features as rows (followed
    by the anchor a-features in the ``"reference"`` form, below) and as columns the current
    b-features followed by the anchor b-features (C = M + K candidates):
    ``L_{a->b} = multi_positive_info_nce(a, cat(b, b_anchor), P, tau)``, i.e. with unit
    vectors and s_ij = <a_i, c_j> / tau

    ``L_{a->b} = 1/|R| sum_{i in R} -1/|P(i)| sum_{p in P(i)} log softmax_j(s_ij)[p]``

    over rows R with at least one positive (every current row has one: its own item in the
    other modality). The pair loss is symmetric, ``L_{a,b} = (L_{a->b} + L_{b->a}) / 2``, and
    the term is the mean over the pairs (audio, object), (audio, motion), (motion, object);
    over (audio, object) only when ``current.motion`` is None (Co-Separation).

    Positives P(i) for row i among the candidates j:
      - ``L_ins``: same clip id (clip_ids[i] == id_j). The current item itself, the same clip
        appearing in several mixtures of the batch, and the old-model anchor of that clip.
      - ``L_cls``: same class label (labels[i] == label_j), which includes the instance ones.

    Identity is decided by clip ids (ints, or strings mapped to ints through one vocabulary
    shared by current and anchor items), never by comparing float features (the reference code
    compared motion features, which merges distinct clips with equal features and splits equal
    clips whose features differ by dropout).

    Where the anchors go (``form``, config key ``strategy.crosssdc_form``); they are detached in
    both forms, so no gradient ever reaches the old model's features:

    - ``"anchors"`` (default, the documented protocol): extra columns only, never rows. They are
      the fixed targets the new features are pulled toward (numerator, for memory clips and
      same-class rows) and pushed from (denominator); every term averages over exactly the M
      current rows whatever K is.
    - ``"reference"``: what the official ContAV-Sep code does (``main.py``,
      ``cross_modal_contrastive_loss`` on ``cat(new-class items, memory items by the new model,
      memory items by the old model)``). The K anchors are rows as well as columns: each
      direction is one (M + K) x (M + K) similarity matrix, positives are same clip / same class
      among all M + K items (an anchor and the current item of the same clip are instance
      positives of each other, anchors of a class are class positives of that class's current
      items), and the loss is the mean over all M + K rows (each has a positive: its own item in
      the other modality), so the K anchor rows are weighted like current rows and the anchors'
      share of the loss grows with the number of memory sources in the batch. The anchor rows
      add softmaxes centred on old features; their gradient reaches only the new columns (a
      second, differently weighted pull of the new features toward the old ones), and their
      old-vs-old entries carry no gradient but still weigh in the softmax. Differences from
      that code: identity by clip id (see above), not by equality of motion features; the row
      order (current items in batch order, then anchors) differs, which does not change the
      loss.

    Without anchors (K = 0: step 0, a batch without memory sources, AV-CIL) both forms are the
    same M x M loss, as in the reference code.

    Args:
        current: features of the model being trained, for all M source items.
        labels: class id of each current item.
        clip_ids: clip identity of each current item (integer tensor, or a possibly nested
            sequence of str / int matching the items' row-major order).
        temperature: tau (paper: 0.05).
        anchors: old-model features of memory items, or None. Must have motion iff
            ``current`` has motion.
        anchor_labels: class id of each anchor (required with anchors).
        anchor_clip_ids: clip identity of each anchor (required with anchors).
        form: ``"anchors"`` (anchors as columns) or ``"reference"`` (as rows and columns).

    Returns:
        ``(loss_ins, loss_cls)``, two float32 scalars.

    Shape:
        - current fields: :math:`(B, N, D)` or :math:`(M, D)`
        - labels: :math:`(B, N)` or :math:`(M,)` integer
        - clip_ids: M ids
        - anchors fields: :math:`(K, D)` (or any leading dims with K items)
        - anchor_labels: :math:`(K,)` integer; anchor_clip_ids: K ids
        - output: :math:`()`, :math:`()`
    """
    if form not in CROSS_SDC_FORMS:
        raise ValueError(f"form must be one of {', '.join(CROSS_SDC_FORMS)}, got {form!r}")
    num_items = current.num_items()
    device = current.audio.device
    cur_labels = _flat_int_tensor(labels, "labels", num_items, device)

    num_anchors = 0
    if anchors is not None:
        if anchor_labels is None or anchor_clip_ids is None:
            raise ValueError("anchors need anchor_labels and anchor_clip_ids")
        if (anchors.motion is None) != (current.motion is None):
            raise ValueError("anchors and current features must both have motion or both not")
        num_anchors = anchors.num_items()
        for name in ("audio", "object", "motion"):
            cur, anc = getattr(current, name), getattr(anchors, name)
            if cur is not None and anc.shape[-1] != cur.shape[-1]:
                raise ValueError(f"anchors.{name} has D={anc.shape[-1]}, current has D={cur.shape[-1]}")
        anc_labels = _flat_int_tensor(anchor_labels, "anchor_labels", num_anchors, device)
        cur_ids, anc_ids = _clip_ids_to_long(clip_ids, anchor_clip_ids, num_items, num_anchors, device)
        all_labels = torch.cat([cur_labels, anc_labels])
        all_ids = torch.cat([cur_ids, anc_ids])
    else:
        if anchor_labels is not None or anchor_clip_ids is not None:
            raise ValueError("anchor_labels / anchor_clip_ids given without anchors")
        (cur_ids,) = _clip_ids_to_long(clip_ids, None, num_items, 0, device)
        all_labels, all_ids = cur_labels, cur_ids

    # Rows are the M current items, followed by the K anchors in the "reference" form.
    num_rows = num_items + num_anchors if form == "reference" else num_items
    instance_pos = all_ids[:num_rows, None] == all_ids[None, :]  # (rows, M + K)
    class_pos = all_labels[:num_rows, None] == all_labels[None, :]  # (rows, M + K)

    modalities = sorted({name for pair in current.pairs() for name in pair})
    keys: dict[str, torch.Tensor] = {}
    for name in modalities:
        feats = current.flat(name)
        if anchors is not None and num_anchors > 0:
            feats = torch.cat([feats, anchors.flat(name).detach()])
        keys[name] = feats  # (M + K, D)
    queries = {name: keys[name][:num_rows] for name in modalities}

    def symmetric_term(positives: torch.Tensor) -> torch.Tensor:
        """Mean over modality pairs of (L_{a->b} + L_{b->a}) / 2 for one positive relation."""
        pairs = current.pairs()
        total: torch.Tensor | None = None
        for a, b in pairs:
            pair = 0.5 * (
                multi_positive_info_nce(queries[a], keys[b], positives, temperature)
                + multi_positive_info_nce(queries[b], keys[a], positives, temperature)
            )
            total = pair if total is None else total + pair
        assert total is not None, "a feature set has at least one modality pair"
        return total / len(pairs)

    return symmetric_term(instance_pos), symmetric_term(class_pos)


def pod_loss(
    new_feats: Sequence[torch.Tensor], old_feats: Sequence[torch.Tensor], scales: int = 3
) -> torch.Tensor:
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
        raise ValueError(f"need the same non-zero number of new and old layers, got {len(new_feats)} and {len(old_feats)}")
    total: torch.Tensor | None = None
    for index, (new, old) in enumerate(zip(new_feats, old_feats)):
        if new.dim() != 4 or new.shape != old.shape:
            raise ValueError(f"layer {index}: new {tuple(new.shape)} and old {tuple(old.shape)} must be equal (B, C, H, W)")
        phi_new = F.normalize(_local_pod_descriptor(new.float().pow(2), scales), dim=-1)
        phi_old = F.normalize(_local_pod_descriptor(old.detach().float().pow(2), scales), dim=-1)
        layer = (phi_new - phi_old).norm(dim=-1).mean()
        total = layer if total is None else total + layer
    assert total is not None  # at least one layer, checked above
    return total / len(new_feats)


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


def _flat_int_tensor(values: torch.Tensor, name: str, count: int, device: torch.device) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        values = torch.as_tensor(values)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {values.dtype}")
    flat = values.reshape(-1).to(device=device, dtype=torch.long)
    if flat.numel() != count:
        raise ValueError(f"{name} has {flat.numel()} entries for {count} items")
    return flat


def _flatten_ids(ids: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for item in ids:
        # Lists, tuples and arrays nest (e.g. B lists of N ids); strings are leaves.
        if not isinstance(item, (str, bytes)) and hasattr(item, "__iter__"):
            out.extend(_flatten_ids(item))
        else:
            out.append(item)
    return out


def _clip_ids_to_long(
    ids: ClipIds, anchor_ids: ClipIds | None, count: int, anchor_count: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Clip ids of current (and anchor) items as long tensors comparable with each other.

    Integer tensors are used as they are. Sequences of str / int are mapped through one
    vocabulary shared by both groups, so the same clip gets the same integer in both. Mixing
    a tensor with a sequence is refused: the two could not be compared reliably.
    """
    groups = [(ids, "clip_ids", count)]
    if anchor_ids is not None:
        groups.append((anchor_ids, "anchor_clip_ids", anchor_count))
    tensor_kinds = {isinstance(g, torch.Tensor) for g, _, _ in groups}
    if len(tensor_kinds) > 1:
        raise TypeError("clip_ids and anchor_clip_ids must both be integer tensors or both be sequences")
    if tensor_kinds == {True}:
        return tuple(_flat_int_tensor(typing.cast(torch.Tensor, g), name, n, device) for g, name, n in groups)
    vocab: dict[tuple[type, Any], int] = {}
    out = []
    for group, name, n in groups:
        flat = _flatten_ids(typing.cast(Sequence[Any], group))
        if len(flat) != n:
            raise ValueError(f"{name} has {len(flat)} entries for {n} items")
        codes = []
        for item in flat:
            # Key on the kind too so the string "3" and the integer 3 stay different clips;
            # numpy integers / strings normalise to int / str so they match plain Python ones.
            if isinstance(item, str):
                key: tuple[type, Any] = (str, str(item))
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
                key = (int, int(item))
            else:
                raise TypeError(f"{name} entries must be str or int, got {item!r} ({type(item).__name__})")
            codes.append(vocab.setdefault(key, len(vocab)))
        out.append(torch.tensor(codes, dtype=torch.long, device=device))
    return tuple(out)
