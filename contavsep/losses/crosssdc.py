"""CrossSDC (``L_ins``, ``L_cls``): multi-positive InfoNCE between the modalities of a
:class:`FeatureSet`, positives by clip id (instance) or class label (class)."""

from __future__ import annotations

import numbers
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------- private helpers


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
