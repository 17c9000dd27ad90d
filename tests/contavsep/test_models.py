"""Separator models: sizes at every preset, the forward contract, query growth, weights I/O."""

from __future__ import annotations

import io

import pytest
import torch

from contavsep.config import make_config
from contavsep.models.av_transformer import sine_positions_1d, sine_positions_2d
from contavsep.models.build import WeightsError, build_model, load_weights
from contavsep.models.iquery import mask_product
from contavsep.models.output import SeparatorOutput

MODELS = ["iquery", "coseparation"]


def grid(cfg) -> tuple[int, int]:
    return cfg.audio.warp_bins, 1 + cfg.audio.clip_samples // cfg.audio.hop


def inputs(cfg, b: int, class_ids: list[list[int]], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    f, t = grid(cfg)
    n = len(class_ids[0])
    m = cfg.model
    return (
        torch.rand(b, 1, f, t, generator=gen) * 3,
        torch.tensor(class_ids, dtype=torch.long),
        torch.randn(b, n, m.object_dim, generator=gen),
        torch.randn(b, n, m.motion_tokens, m.motion_dim, generator=gen),
    )


def tiny_model(name: str, num_classes: int = 5, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = make_config("tiny", {"model.name": name, **overrides})
    return cfg, build_model(cfg, num_classes)


def count(params) -> int:
    return sum(p.numel() for p in params)


def test_paper_parameter_counts_match_the_paper():
    torch.manual_seed(0)
    model = build_model(make_config("paper"), 5)
    unet = count(model.unet_parameters())
    head = count(model.head_parameters())
    assert unet == 30_274_178
    assert abs(unet - 30.27e6) / 30.27e6 < 0.02
    assert head == 5_209_632
    # The quoted ~6.5 M transformer part counts the attention blocks the reference builds in every
    # decoder layer but never uses: self + audio attention (with their norms) in the motion layer,
    # motion attention (with its norm) in each audio layer. Adding them back must give the quote.
    attention = count(model.transformer.motion_layer.motion_attn.parameters())
    norm = count(model.transformer.norm.parameters())
    unused = 2 * (attention + norm) + len(model.transformer.audio_layers) * (attention + norm)
    assert unused == 1_318_400
    assert abs(head + unused - 6.5e6) / 6.5e6 < 0.02


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
@pytest.mark.parametrize("name", MODELS)
def test_output_shapes_at_every_preset(preset, name):
    torch.manual_seed(0)
    cfg = make_config(preset, {"model.name": name})
    model = build_model(cfg, 5).eval()
    m = cfg.model
    f, t = grid(cfg)
    b, n = (1, 2) if preset == "paper" else (2, 2)
    with torch.no_grad():
        out = model(*inputs(cfg, b, [[0, 4]] * b), return_internals=True)
    assert isinstance(out, SeparatorOutput)
    assert out.masks.shape == (b, n, f, t)
    assert float(out.masks.min()) >= 0.0 and float(out.masks.max()) <= 1.0
    assert out.audio_features.shape == (b, n, m.feature_dim)
    assert out.object_features.shape == (b, n, m.feature_dim)
    encoder, decoder = out.unet_features[: m.unet_depth], out.unet_features[m.unet_depth :]
    assert len(decoder) == m.unet_depth
    for i, fmap in enumerate(encoder):
        assert fmap.shape == (b, m.unet_channels * min(2**i, 8), f // 2 ** (i + 1), t // 2 ** (i + 1))
    assert decoder[-1].shape[1:] == (m.mask_channels, f, t)
    if name == "iquery":
        assert out.motion_features.shape == (b, n, m.feature_dim)
        assert out.attention.shape == (b, n, m.n_heads, (f // 8) * (t // 8))
        torch.testing.assert_close(out.attention.sum(-1), torch.ones(b, n, m.n_heads))
        assert decoder[-1].shape[0] == b  # the iQuery U-Net runs once per mixture
    else:
        assert out.motion_features is None and out.attention is None
        assert decoder[-1].shape[0] == b * n  # the conditioned decoder runs per source


@pytest.mark.parametrize("name", MODELS)
def test_internals_are_only_returned_on_request(name):
    cfg, model = tiny_model(name)
    out = model(*inputs(cfg, 2, [[0, 1], [2, 3]]))
    assert out.attention is None and out.unet_features is None


@pytest.mark.parametrize("name", MODELS)
def test_each_source_is_separated_as_if_alone(name):
    # The U-Net/encoder run once per mixture and the decoder for all B*N sources at once; in eval
    # mode every (mixture, source) must give exactly what a batch of that one source gives.
    cfg, model = tiny_model(name)
    model.eval()
    mix, ids, obj, motion = inputs(cfg, 3, [[0, 4], [2, 1], [3, 3]])
    with torch.no_grad():
        batched = model(mix, ids, obj, motion, return_internals=True)
        for b in range(3):
            for n in range(2):
                s = slice(n, n + 1)
                alone = model(
                    mix[b : b + 1], ids[b : b + 1, s], obj[b : b + 1, s], motion[b : b + 1, s], return_internals=True
                )
                torch.testing.assert_close(batched.masks[b, n], alone.masks[0, 0], atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(
                    batched.audio_features[b, n], alone.audio_features[0, 0], atol=1e-5, rtol=1e-4
                )
                torch.testing.assert_close(batched.object_features[b, n], alone.object_features[0, 0])
                if name == "iquery":
                    torch.testing.assert_close(batched.attention[b, n], alone.attention[0, 0], atol=1e-6, rtol=1e-4)
                    torch.testing.assert_close(batched.motion_features[b, n], alone.motion_features[0, 0])


def test_iquery_mask_depends_on_the_class_query_and_the_object():
    cfg, model = tiny_model("iquery")
    model.eval()
    mix, ids, obj, motion = inputs(cfg, 1, [[1, 2]])
    with torch.no_grad():
        base = model(mix, ids, obj, motion).masks
        other_class = model(mix, torch.tensor([[3, 2]]), obj, motion).masks
        other_object = model(mix, ids, obj.flip(1), motion).masks
    assert not torch.allclose(base[0, 0], other_class[0, 0])
    torch.testing.assert_close(base[0, 1], other_class[0, 1])  # the other source is untouched
    assert not torch.allclose(base, other_object)


def test_coseparation_reads_the_object_not_the_class_nor_motion():
    cfg, model = tiny_model("coseparation")
    model.eval()
    mix, ids, obj, motion = inputs(cfg, 2, [[1, 2], [0, 3]])
    with torch.no_grad():
        base = model(mix, ids, obj, motion).masks
        assert torch.equal(base, model(mix, torch.zeros_like(ids), obj, None).masks)
        assert not torch.allclose(base, model(mix, ids, obj.flip(1), motion).masks)


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    # A parameter without gradient would make DDP fail (or need find_unused_parameters).
    cfg, model = tiny_model(name)
    model.train()
    out = model(*inputs(cfg, 4, [[0, 1], [2, 3], [4, 0], [1, 2]]), return_internals=True)
    loss = out.masks.mean() + out.audio_features.square().mean() + out.object_features.square().mean()
    if out.motion_features is not None:
        loss = loss + out.motion_features.square().mean() + out.attention.square().mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MODELS)
def test_outputs_stay_float32_under_bf16_autocast(name):
    cfg, model = tiny_model(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs(cfg, 2, [[0, 1], [2, 3]]), return_internals=True)
    tensors = [out.masks, out.audio_features, out.object_features]
    if name == "iquery":
        tensors += [out.motion_features, out.attention]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in tensors)
    sum(t.mean() for t in tensors).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_expand_classes_keeps_old_queries():
    cfg, model = tiny_model("iquery", num_classes=5)
    old = model.class_queries.detach().clone()
    mix, _, obj, motion = inputs(cfg, 1, [[0, 7]])
    with pytest.raises(ValueError, match="expand_classes"):
        model(mix, torch.tensor([[0, 7]]), obj, motion)
    model.expand_classes(10)
    assert model.num_classes == 10 and model.class_queries.shape == (10, cfg.model.d_model)
    assert model.class_queries.requires_grad
    torch.testing.assert_close(model.class_queries[:5].detach(), old)
    assert not torch.allclose(model.class_queries[5:].detach(), torch.zeros(5, cfg.model.d_model))
    out = model(mix, torch.tensor([[0, 7]]), obj, motion)
    assert out.masks.shape[:2] == (1, 2)
    model.expand_classes(10)  # same size: no-op
    torch.testing.assert_close(model.class_queries[:5].detach(), old)
    with pytest.raises(ValueError, match="shrink"):
        model.expand_classes(4)


def test_coseparation_tracks_the_class_count():
    _, model = tiny_model("coseparation", num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.expand_classes(10)
    assert model.num_classes == 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="shrink"):
        model.expand_classes(3)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_groups_split_the_model(name):
    _, model = tiny_model(name)
    unet = {id(p) for p in model.unet_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert unet == {id(p) for p in model.unet.parameters()}
    assert unet and head and not unet & head
    assert unet | head == {id(p) for p in model.parameters()}


def test_width_mismatches_add_projections():
    # tiny: latent width 4 * 8 = 32; d_model 64 needs the 1x1 input projection, feature_dim 16 heads.
    cfg, model = tiny_model("iquery", **{"model.d_model": 64, "model.feature_dim": 16})
    assert isinstance(model.input_proj, torch.nn.Conv2d) and isinstance(model.audio_head, torch.nn.Linear)
    out = model(*inputs(cfg, 2, [[0, 1], [2, 3]]))
    assert out.audio_features.shape == out.object_features.shape == out.motion_features.shape == (2, 2, 16)


def test_bad_inputs_name_the_argument():
    cfg, model = tiny_model("iquery")
    mix, ids, obj, motion = inputs(cfg, 2, [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="object_features"):
        model(mix, ids, obj[..., :10], motion)
    with pytest.raises(ValueError, match="motion_features"):
        model(mix, ids, obj, motion[:, :, :4])
    with pytest.raises(ValueError, match="class_ids"):
        model(mix, ids.float(), obj, motion)
    with pytest.raises(ValueError, match="divisible"):
        model(mix[..., :60], ids, obj, motion)
    with pytest.raises(ValueError, match="decoder"):
        tiny_model("iquery", **{"model.decoder_layers": 1})


def test_sine_positions():
    pos = sine_positions_2d(4, 6, 8)
    assert pos.shape == (24, 8)
    assert torch.unique(pos, dim=0).shape[0] == 24  # every grid cell is distinguishable
    # Row-major: cell (y=1, x=2) is token 1 * 6 + 2; channel 0 is sin(2 pi (y+1) / H), channel 4 sin(2 pi (x+1) / W).
    torch.testing.assert_close(pos[8, 0], torch.tensor(2 * torch.pi * 2 / 4).sin())
    torch.testing.assert_close(pos[8, 4], torch.tensor(2 * torch.pi * 3 / 6).sin())
    pos1 = sine_positions_1d(8, 6)
    torch.testing.assert_close(pos1[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(pos1[3, 0], torch.tensor(3.0).sin())


@pytest.mark.parametrize("name", MODELS)
def test_weights_round_trip_through_build_model(name, tmp_path):
    cfg, trained = tiny_model(name, seed=1)
    trained.eval()
    path = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), path)
    batch = inputs(cfg, 2, [[0, 1], [2, 3]])
    with torch.no_grad():
        expected = trained(*batch).masks
    for source in (str(path), path.as_uri()):
        cfg_w = make_config("tiny", {"model.name": name, "model.weights": source})
        torch.manual_seed(2)
        loaded = build_model(cfg_w, 5).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded(*batch).masks, expected)
    # A checkpoint dict nesting the state_dict, read from a stream (as storage would hand it over).
    buffer = io.BytesIO()
    torch.save({"model": trained.state_dict(), "step": 3}, buffer)
    buffer.seek(0)
    _, fresh = tiny_model(name, seed=3)
    load_weights(fresh.eval(), buffer)
    with torch.no_grad():
        torch.testing.assert_close(fresh(*batch).masks, expected)


def test_load_weights_reports_mismatches(tmp_path):
    _, model = tiny_model("iquery", num_classes=5)
    state = model.state_dict()

    def save(obj, name: str):
        path = tmp_path / name
        torch.save(obj, path)
        return path

    missing = dict(state)
    del missing["mask_embed.0.weight"]
    with pytest.raises(WeightsError, match=r"missing keys \(1\): mask_embed\.0\.weight"):
        load_weights(model, save(missing, "missing.pt"))
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): extra\.weight"):
        load_weights(model, save({**state, "extra.weight": torch.zeros(1)}, "extra.pt"))
    _, grown = tiny_model("iquery", num_classes=10)
    with pytest.raises(
        WeightsError, match=r"class_queries: weights \(10, 32\), model \(5, 32\)[\s\S]*expand_classes\(10\)"
    ):
        load_weights(model, save(grown.state_dict(), "grown.pt"))
    model.expand_classes(10)
    load_weights(model, tmp_path / "grown.pt")
    torch.testing.assert_close(model.class_queries, grown.class_queries)
    _, coseparation = tiny_model("coseparation")
    with pytest.raises(WeightsError, match="do not fit CoSeparationSeparator"):
        load_weights(coseparation, tmp_path / "grown.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(model, tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        load_weights(model, tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="s3://"):
        load_weights(model, "s3://bucket/weights.pt")


@pytest.mark.parametrize("channels_last", [False, True])
def test_mask_product_is_the_einsum_without_copying_the_feature_map(channels_last):
    from torch.profiler import profile

    torch.manual_seed(0)
    features = torch.randn(3, 8, 16, 12, dtype=torch.float64)
    if channels_last:
        features = features.to(memory_format=torch.channels_last)
    features.requires_grad_()
    weights = torch.randn(3, 2, 8, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 2, 16, 12, dtype=torch.float64)
    expected = torch.einsum("bnc,bcft->bnft", weights, features)
    grads = torch.autograd.grad((expected * upstream).sum(), (weights, features))
    with profile() as prof:
        got = mask_product(weights, features)
        got_grads = torch.autograd.grad((got * upstream).sum(), (weights, features))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    for g, e in zip(got_grads, grads):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-12)
    # the feature map (or its gradient) is never copied into another layout; einsum does copy
    # channels_last features (the reason this function exists)
    copies = [e.key for e in prof.key_averages() if e.key in ("aten::copy_", "aten::clone", "aten::contiguous")]
    assert copies == []
    assert got_grads[1].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
