"""Tests of contavsep.losses against hand formulas and plain-Python reference loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contavsep.losses import (
    FeatureSet,
    attention_distillation,
    cross_sdc,
    mask_distillation_loss,
    multi_positive_info_nce,
    pod_loss,
    weighted_l1_mask_loss,
)

# ------------------------------------------------------------------------------ reference loops


def _unit(vec: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec]


def _loop_direction(rows, cols, row_keys, col_keys, tau):
    """-mean over positives of log softmax, averaged over rows with a positive (Python floats)."""
    total, used = 0.0, 0
    for i, q in enumerate(rows):
        q = _unit(q)
        logits = [sum(a * b for a, b in zip(q, _unit(k))) / tau for k in cols]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(s - top) for s in logits))
        pos = [j for j in range(len(cols)) if col_keys[j] == row_keys[i]]
        if not pos:
            continue
        total += -sum(logits[p] - log_z for p in pos) / len(pos)
        used += 1
    return total / used


def _loop_cross_sdc(feats, labels, ids, tau, anchor_feats=None, anchor_labels=None, anchor_ids=None, form="anchors"):
    """CrossSDC from the specification, item by item; feats maps modality -> list of vectors.

    Columns are the current items then the anchors; rows are the current items ("anchors"
    form) or the current items then the anchors ("reference" form, as the official code).
    """
    modalities = [m for m in ("audio", "object", "motion") if feats.get(m) is not None]
    pairs = [("audio", "object")]
    if "motion" in modalities:
        pairs += [("audio", "motion"), ("motion", "object")]
    anchor_feats = anchor_feats or {m: [] for m in modalities}
    anchor_labels = anchor_labels or []
    anchor_ids = anchor_ids or []
    results = []
    for keys, anchor_keys in ((ids, anchor_ids), (labels, anchor_labels)):
        col_keys = keys + anchor_keys
        row_keys = col_keys if form == "reference" else keys
        acc = 0.0
        for a, b in pairs:
            rows_a = feats[a] + anchor_feats[a] if form == "reference" else feats[a]
            rows_b = feats[b] + anchor_feats[b] if form == "reference" else feats[b]
            ab = _loop_direction(rows_a, feats[b] + anchor_feats[b], row_keys, col_keys, tau)
            ba = _loop_direction(rows_b, feats[a] + anchor_feats[a], row_keys, col_keys, tau)
            acc += 0.5 * (ab + ba)
        results.append(acc / len(pairs))
    return tuple(results)


def _as_lists(t: torch.Tensor) -> list[list[float]]:
    return t.reshape(-1, t.shape[-1]).double().tolist()


# ---------------------------------------------------------------------------- weighted L1 / dist


def test_weighted_l1_equals_hand_formula():
    g = torch.Generator().manual_seed(0)
    est = torch.rand(2, 3, 4, 5, generator=g)
    target = torch.rand(2, 3, 4, 5, generator=g) * 5
    weight = torch.rand(2, 1, 4, 5, generator=g) * 10
    w, e, y = weight.tolist(), est.tolist(), target.tolist()
    expected = 0.0
    for b in range(2):
        for n in range(3):
            for f in range(4):
                for t in range(5):
                    expected += w[b][0][f][t] * abs(e[b][n][f][t] - y[b][n][f][t])
    expected /= 2 * 3 * 4 * 5
    assert weighted_l1_mask_loss(est, target, weight).item() == pytest.approx(expected, rel=1e-5)


def test_weighted_l1_rejects_bad_shapes():
    est = torch.rand(2, 2, 4, 4)
    with pytest.raises(ValueError):
        weighted_l1_mask_loss(est, torch.rand(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError):  # a weight that would enlarge the masks
        weighted_l1_mask_loss(est, est, torch.ones(3, 2, 4, 4))


def test_mask_distillation_only_on_flagged_sources():
    g = torch.Generator().manual_seed(1)
    new = torch.rand(2, 2, 4, 6, generator=g, requires_grad=True)
    old = new.detach().clone()
    weight = torch.rand(2, 1, 4, 6, generator=g) + 0.1
    flags = torch.tensor([[False, True], [True, False]])
    # Masks differ only on an unflagged source: zero.
    old_diff_unflagged = old.clone()
    old_diff_unflagged[1, 1] = 1.0 - old_diff_unflagged[1, 1]
    assert mask_distillation_loss(new, old_diff_unflagged, weight, flags).item() == 0.0
    # Masks differ on one of the two flagged sources: positive, equal to the hand formula
    # (mean over flagged sources and bins).
    old_diff_flagged = old.clone()
    old_diff_flagged[0, 1] = 1.0 - old_diff_flagged[0, 1]
    loss = mask_distillation_loss(new, old_diff_flagged, weight, flags)
    expected = (weight[0, 0] * (new[0, 1] - old_diff_flagged[0, 1]).abs()).mean().item() / 2
    assert loss.item() > 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # The old masks may also be passed for the flagged sources only.
    assert mask_distillation_loss(new, old_diff_flagged[flags], weight, flags).item() == pytest.approx(
        expected, rel=1e-6
    )
    loss.backward()
    assert new.grad[0, 1].abs().sum() > 0  # (1, 0) agrees with the old mask: |0| has zero slope
    assert new.grad[0, 0].abs().sum() == 0 and new.grad[1, 1].abs().sum() == 0


def test_mask_distillation_zero_with_graph_when_nothing_flagged():
    new = torch.rand(2, 2, 3, 3, requires_grad=True)
    loss = mask_distillation_loss(
        new, torch.rand(2, 2, 3, 3), torch.ones(2, 1, 3, 3), torch.zeros(2, 2, dtype=torch.bool)
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert new.grad is not None and new.grad.abs().sum() == 0


def test_mask_distillation_rejects_non_bool_flags():
    new = torch.rand(1, 2, 3, 3)
    with pytest.raises(TypeError):
        mask_distillation_loss(new, new, torch.ones(1, 1, 3, 3), torch.tensor([[1, 0]]))


# ------------------------------------------------------------------------------------ CrossSDC


def _random_setup(seed: int, with_motion: bool, dim: int = 6):
    g = torch.Generator().manual_seed(seed)
    b, n = 3, 2
    feats = {m: torch.randn(b, n, dim, generator=g) for m in ("audio", "object", "motion")}
    if not with_motion:
        feats["motion"] = None
    # Duplicated clip ids (the same clip in two mixtures) and labels.
    ids = [["c0", "c1"], ["c2", "c0"], ["c3", "c4"]]
    labels = torch.tensor([[0, 1], [2, 0], [1, 2]])
    return feats, ids, labels


def _random_anchors(seed: int, with_motion: bool, dim: int = 6):
    """Old-model features of 4 memory items: c0 twice (a clip drawn twice), c4, and c9 (not in
    the batch); their classes repeat the batch's."""
    g = torch.Generator().manual_seed(seed)
    anchor_t = {m: torch.randn(4, dim, generator=g) for m in ("audio", "object", "motion")}
    if not with_motion:
        anchor_t["motion"] = None
    return anchor_t, ["c0", "c9", "c4", "c0"], [0, 1, 2, 0]


@pytest.mark.parametrize("form", ["anchors", "reference"])
@pytest.mark.parametrize("with_motion", [True, False])
@pytest.mark.parametrize("with_anchors", [True, False])
def test_cross_sdc_matches_python_loop(with_motion: bool, with_anchors: bool, form: str):
    feats, ids, labels = _random_setup(2, with_motion)
    tau = 0.07
    current = FeatureSet(feats["audio"], feats["object"], feats["motion"])
    flat_ids = [i for row in ids for i in row]
    flat_labels = labels.reshape(-1).tolist()
    loop_feats = {m: (_as_lists(t) if t is not None else None) for m, t in feats.items()}
    kwargs = {}
    loop_kwargs = {}
    if with_anchors:
        anchor_t, anchor_ids, anchor_labels = _random_anchors(3, with_motion)
        kwargs = dict(
            anchors=FeatureSet(anchor_t["audio"], anchor_t["object"], anchor_t["motion"]),
            anchor_labels=torch.tensor(anchor_labels),
            anchor_clip_ids=anchor_ids,
        )
        loop_kwargs = dict(
            anchor_feats={m: (_as_lists(t) if t is not None else []) for m, t in anchor_t.items()},
            anchor_labels=anchor_labels,
            anchor_ids=anchor_ids,
        )
    loss_ins, loss_cls = cross_sdc(current, labels, ids, tau, form=form, **kwargs)
    ref_ins, ref_cls = _loop_cross_sdc(loop_feats, flat_labels, flat_ids, tau, form=form, **loop_kwargs)
    assert loss_ins.item() == pytest.approx(ref_ins, rel=1e-5)
    assert loss_cls.item() == pytest.approx(ref_cls, rel=1e-5)
    assert loss_ins.item() != pytest.approx(loss_cls.item(), rel=1e-3)


@pytest.mark.parametrize("with_motion", [True, False])
def test_cross_sdc_forms_differ_with_anchors_and_coincide_without(with_motion: bool):
    feats, ids, labels = _random_setup(14, with_motion)
    current = FeatureSet(feats["audio"], feats["object"], feats["motion"])
    anchor_t, anchor_ids, anchor_labels = _random_anchors(15, with_motion)
    anchors = FeatureSet(anchor_t["audio"], anchor_t["object"], anchor_t["motion"])
    kw = dict(anchors=anchors, anchor_labels=torch.tensor(anchor_labels), anchor_clip_ids=anchor_ids)
    with_cols = cross_sdc(current, labels, ids, form="anchors", **kw)
    with_rows = cross_sdc(current, labels, ids, form="reference", **kw)
    for cols_term, rows_term in zip(with_cols, with_rows):
        assert abs(cols_term.item() - rows_term.item()) > 1e-3
    # No anchors, or an empty anchor set (a batch without memory sources): the same M x M loss.
    empty = FeatureSet(
        *(None if t is None else t[:0] for t in (anchor_t["audio"], anchor_t["object"], anchor_t["motion"]))
    )
    empty_kw = dict(anchors=empty, anchor_labels=torch.zeros(0, dtype=torch.long), anchor_clip_ids=[])
    plain = cross_sdc(current, labels, ids, form="anchors")
    for other in (
        cross_sdc(current, labels, ids, form="reference"),
        cross_sdc(current, labels, ids, form="reference", **empty_kw),
        cross_sdc(current, labels, ids, form="anchors", **empty_kw),
    ):
        assert torch.equal(other[0], plain[0]) and torch.equal(other[1], plain[1])


def test_cross_sdc_rejects_unknown_form():
    feats, ids, labels = _random_setup(16, True)
    with pytest.raises(ValueError, match="form must be one of anchors, reference"):
        cross_sdc(FeatureSet(feats["audio"], feats["object"], feats["motion"]), labels, ids, form="rows")


def test_cross_sdc_integer_and_string_ids_agree():
    feats, ids, labels = _random_setup(4, True)
    current = FeatureSet(feats["audio"], feats["object"], feats["motion"])
    int_ids = torch.tensor([[int(i[1:]) for i in row] for row in ids])
    by_str = cross_sdc(current, labels, ids)
    by_int = cross_sdc(current, labels, int_ids)
    assert by_str[0].item() == pytest.approx(by_int[0].item(), rel=1e-6)
    assert by_str[1].item() == pytest.approx(by_int[1].item(), rel=1e-6)
    with pytest.raises(TypeError):  # floats are never used as identities
        cross_sdc(current, labels, int_ids.float())


def test_cross_sdc_aligned_features_score_lower_than_shuffled():
    g = torch.Generator().manual_seed(5)
    m, dim = 8, 16
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    centres = torch.randn(4, dim, generator=g)
    base = centres[labels] + 0.5 * torch.randn(m, dim, generator=g)

    def noisy() -> torch.Tensor:
        return base + 0.01 * torch.randn(m, dim, generator=g)

    aligned = FeatureSet(noisy(), noisy(), noisy())
    perm = torch.tensor([2, 4, 6, 0, 7, 1, 3, 5])  # moves every item to another class
    shuffled = FeatureSet(noisy(), noisy()[perm], noisy()[torch.roll(perm, 1)])
    ids = list(range(m))
    ins_a, cls_a = cross_sdc(aligned, labels, ids)
    ins_s, cls_s = cross_sdc(shuffled, labels, ids)
    assert ins_a.item() < ins_s.item()
    assert cls_a.item() < cls_s.item()


def test_cross_sdc_no_gradient_into_anchors():
    feats, ids, labels = _random_setup(6, True)
    anchor_values = {k: torch.randn(2, 6, generator=torch.Generator().manual_seed(17)) for k in feats}
    grads = {}
    for form in ("anchors", "reference"):
        current = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
        anchor = {k: v.clone().requires_grad_(True) for k, v in anchor_values.items()}
        loss_ins, loss_cls = cross_sdc(
            FeatureSet(current["audio"], current["object"], current["motion"]),
            labels,
            ids,
            0.05,
            anchors=FeatureSet(anchor["audio"], anchor["object"], anchor["motion"]),
            anchor_labels=torch.tensor([0, 2]),
            anchor_clip_ids=["c0", "c2"],
            form=form,
        )
        (loss_ins + loss_cls).backward()
        for name in ("audio", "object", "motion"):
            assert anchor[name].grad is None, (form, name)
            assert current[name].grad is not None and current[name].grad.abs().sum() > 0
        grads[form] = torch.cat([current[name].grad.reshape(-1) for name in ("audio", "object", "motion")])
    # The anchor rows of the reference form do pull on the current features (through the columns).
    assert not torch.allclose(grads["anchors"], grads["reference"], rtol=1e-3, atol=1e-6)


def test_cross_sdc_anchor_pulls_towards_old_features():
    """A memory clip's instance loss is lower when its new features sit on its old ones."""
    g = torch.Generator().manual_seed(7)
    feats = {k: torch.randn(4, 8, generator=g) for k in ("audio", "object", "motion")}
    old = {k: torch.randn(1, 8, generator=g) for k in feats}
    labels = torch.tensor([0, 1, 2, 3])
    ids = [10, 11, 12, 13]
    kw = dict(anchor_labels=torch.tensor([0]), anchor_clip_ids=[10])
    near = {k: v.clone() for k, v in feats.items()}
    for k in near:
        near[k][0] = old[k][0]
    far_ins, _ = cross_sdc(FeatureSet(**feats), labels, ids, anchors=FeatureSet(**old), **kw)
    near_ins, _ = cross_sdc(FeatureSet(**near), labels, ids, anchors=FeatureSet(**old), **kw)
    assert near_ins.item() < far_ins.item()


def test_cross_sdc_motion_presence_must_match():
    feats, ids, labels = _random_setup(8, False)
    with pytest.raises(ValueError):
        cross_sdc(
            FeatureSet(feats["audio"], feats["object"]),
            labels,
            ids,
            anchors=FeatureSet(torch.randn(1, 6), torch.randn(1, 6), torch.randn(1, 6)),
            anchor_labels=torch.tensor([0]),
            anchor_clip_ids=["c0"],
        )


def test_info_nce_rows_without_positive_are_skipped():
    g = torch.Generator().manual_seed(9)
    q, k = torch.randn(3, 4, generator=g), torch.randn(5, 4, generator=g)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1] = mask[0, 3] = True
    mask[2, 4] = True
    rows, cols = _as_lists(q), _as_lists(k)
    expected = 0.0
    for i, pos in ((0, [1, 3]), (2, [4])):
        qi = _unit(rows[i])
        logits = [sum(a * b for a, b in zip(qi, _unit(c))) / 0.1 for c in cols]
        log_z = math.log(sum(math.exp(s) for s in logits))
        expected += -sum(logits[p] - log_z for p in pos) / len(pos)
    expected /= 2
    assert multi_positive_info_nce(q, k, mask, 0.1).item() == pytest.approx(expected, rel=1e-5)
    none = multi_positive_info_nce(q.requires_grad_(True), k, torch.zeros(3, 5, dtype=torch.bool), 0.1)
    assert none.item() == 0.0 and none.requires_grad


# ------------------------------------------------------------------------------ POD / attention


def test_pod_zero_for_identical_and_positive_otherwise():
    g = torch.Generator().manual_seed(10)
    layers = [
        torch.randn(2, 3, 8, 8, generator=g),
        torch.randn(2, 4, 5, 3, generator=g),
        torch.randn(2, 2, 1, 2, generator=g),
    ]
    assert pod_loss(layers, [x.clone() for x in layers], scales=3).item() == pytest.approx(0.0, abs=1e-6)
    other = [x + 0.5 * torch.randn(x.shape, generator=g) for x in layers]
    assert pod_loss(layers, other, scales=3).item() > 0


def test_pod_single_scale_matches_hand_formula():
    g = torch.Generator().manual_seed(11)
    new = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    old = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)

    def phi(x):
        e = x.pow(2)
        d = torch.cat([e.mean(dim=3).reshape(2, -1), e.mean(dim=2).reshape(2, -1)], dim=1)
        return d / d.norm(dim=1, keepdim=True)

    expected = (phi(new) - phi(old)).norm(dim=1).mean().item()
    loss = pod_loss([new], [old], scales=1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert old.grad is None and new.grad is not None


def test_attention_distillation_kl_on_flagged_sources():
    g = torch.Generator().manual_seed(12)
    new = torch.softmax(torch.randn(2, 2, 3, 5, generator=g), dim=-1).requires_grad_(True)
    old = torch.softmax(torch.randn(2, 2, 3, 5, generator=g), dim=-1)
    flags = torch.tensor([[False, True], [False, False]])
    expected = sum(
        float(old[0, 1, r, c]) * (math.log(float(old[0, 1, r, c])) - math.log(float(new.detach()[0, 1, r, c])))
        for r in range(3)
        for c in range(5)
    )
    loss = attention_distillation(new, old, flags)
    assert loss.item() == pytest.approx(expected, rel=1e-5) and loss.item() > 0
    assert attention_distillation(new, new.detach(), flags).item() == pytest.approx(0.0, abs=1e-6)
    empty = attention_distillation(new, old, torch.zeros(2, 2, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad


def test_cross_sdc_in_float32_under_bf16_autocast():
    feats, ids, labels = _random_setup(13, True)
    bf16 = FeatureSet(*(feats[k].bfloat16().requires_grad_(True) for k in ("audio", "object", "motion")))
    reference = cross_sdc(
        FeatureSet(*(getattr(bf16, k).detach().float() for k in ("audio", "object", "motion"))), labels, ids
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ins, loss_cls = cross_sdc(bf16, labels, ids)
    assert loss_ins.dtype == torch.float32 and loss_cls.dtype == torch.float32
    assert loss_ins.item() == pytest.approx(reference[0].item(), rel=1e-6)
    assert loss_cls.item() == pytest.approx(reference[1].item(), rel=1e-6)
    (loss_ins + loss_cls).backward()
    assert bf16.audio.grad is not None and bf16.audio.grad.dtype == torch.bfloat16


def test_clip_id_kinds():
    feats, _, labels = _random_setup(14, False)
    current = FeatureSet(feats["audio"], feats["object"])
    as_ints = cross_sdc(current, labels, torch.tensor([0, 1, 2, 0, 3, 4]))
    as_numpy = cross_sdc(current, labels, np.array([[0, 1], [2, 0], [3, 4]]))
    assert as_ints[0].item() == pytest.approx(as_numpy[0].item(), rel=1e-6)
    # The string "0" and the integer 0 are different clips.
    mixed = cross_sdc(current, labels, [0, 1, 2, "0", 3, 4])
    distinct = cross_sdc(current, labels, [0, 1, 2, 5, 3, 4])
    assert mixed[0].item() == pytest.approx(distinct[0].item(), rel=1e-6)
    with pytest.raises(ValueError):
        cross_sdc(current, labels, [0, 1, 2])
