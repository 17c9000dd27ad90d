"""The U-Net's cheaper computations equal the straightforward one (F.interpolate, nn.BatchNorm2d).

``contavsep.models.unet`` upsamples by expand + reshape, merges "upsample + 3x3 conv" into one
transposed conv or a stride-1 conv + depth-to-space (``train.decoder_conv``), runs the encoder's
stride-2 convs as stride-1 convs over 2x2 blocks (``train.encoder_conv``), and normalises the
1-channel input with plain reductions (all for GPU speed). These tests run the reference computation on a copy of
the same module and require equal outputs, parameter gradients and BatchNorm running statistics,
so an optimisation cannot silently change the model's function.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contavsep.models.unet import (
    UNet,
    set_decoder_conv,
    set_encoder_conv,
    space_to_depth_conv4x4,
    subpixel_conv3x3,
    upsample_conv3x3,
    upsample_nearest2x,
)


def reference_forward(unet: UNet, spec: Tensor) -> Tensor:
    """The U-Net as first written: nn.BatchNorm2d input norm, F.interpolate nearest upsampling."""
    norm = unet.input_norm
    x = nn.BatchNorm2d.forward(norm, spec)
    maps = []
    for block in unet.down:
        x = block.norm(block.conv(block.activation(x)))
        maps.append(x)
    x = maps[-1]
    for k, block in enumerate(unet.up):
        if k > 0:
            x = torch.cat([maps[unet.depth - 1 - k], x], dim=1)
        x = block.norm(block.conv(F.interpolate(F.relu(x), scale_factor=2.0, mode="nearest")))
    return x


def relative(a: Tensor, b: Tensor) -> float:
    return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-30))


# (decoder_conv, min_pixels, encoder_conv): literal; transposed on every level; transposed by the
# default size rule (at these sizes: the two outermost levels merged, the inner ones literal);
# subpixel on every level and by the size rule, with the encoder as space-to-depth convs
VARIANTS = [
    ("upsample", 0, "strided"),
    ("transposed", 0, "strided"),
    ("transposed", 300, "strided"),
    ("subpixel", 0, "space_to_depth"),
    ("subpixel", 300, "strided"),
    ("upsample", 0, "space_to_depth"),
]


def run_both(
    dtype: torch.dtype,
    channels_last: bool,
    decoder_conv: str,
    min_pixels: int = 0,
    encoder_conv: str = "strided",
    iterations: int = 2,
) -> tuple[UNet, UNet, list[tuple[Tensor, Tensor]]]:
    torch.manual_seed(0)
    ours = UNet(channels=8, depth=5, out_channels=8).to(dtype)
    set_decoder_conv(ours, decoder_conv, min_pixels)
    set_encoder_conv(ours, encoder_conv)
    ref = copy.deepcopy(ours)
    gen = torch.Generator().manual_seed(1)
    outputs = []
    for _ in range(iterations):  # several: running statistics and gradients accumulate over them
        spec = (torch.rand(3, 1, 64, 32, generator=gen) * 3).to(dtype)
        if channels_last:
            ours, ref = ours.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
            spec = spec.contiguous(memory_format=torch.channels_last)
        a, b = ours(spec).mask_features, reference_forward(ref, spec)
        weight = torch.randn(a.shape, generator=gen, dtype=dtype)
        (a * weight).sum().backward()
        (b * weight).sum().backward()
        outputs.append((a, b))
    return ours, ref, outputs


@pytest.mark.parametrize(("decoder_conv", "min_pixels", "encoder_conv"), VARIANTS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_unet_equals_the_reference_computation_in_float64(channels_last, decoder_conv, min_pixels, encoder_conv):
    ours, ref, outputs = run_both(torch.float64, channels_last, decoder_conv, min_pixels, encoder_conv)
    for a, b in outputs:
        assert relative(a, b) < 1e-12
        if channels_last:  # every level kept the layout (no NCHW <-> NHWC conversion per conv)
            assert a.is_contiguous(memory_format=torch.channels_last)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        assert relative(p.grad, q.grad) < 1e-10, name
    for (name, p), (_, q) in zip(ours.named_buffers(), ref.named_buffers(), strict=True):
        assert torch.allclose(p.double(), q.double(), rtol=1e-12, atol=0), name
    assert int(ours.input_norm.num_batches_tracked) == 2
    # evaluation mode (running statistics) too
    ours.eval(), ref.eval()
    spec = torch.rand(2, 1, 64, 32, dtype=torch.float64) * 3
    with torch.no_grad():
        assert relative(ours(spec).mask_features, reference_forward(ref, spec)) < 1e-12


@pytest.mark.parametrize(("decoder_conv", "min_pixels", "encoder_conv"), VARIANTS)
def test_unet_equals_the_reference_computation_in_float32(decoder_conv, min_pixels, encoder_conv):
    ours, ref, outputs = run_both(
        torch.float32, channels_last=False, decoder_conv=decoder_conv, min_pixels=min_pixels, encoder_conv=encoder_conv
    )
    for a, b in outputs:
        assert relative(a, b) < 1e-5
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        # summed gradients (BatchNorm bias, weights) cancel a lot: compare at the size of the sum's terms
        assert float((p.grad - q.grad).abs().max()) < 1e-5 * float(q.grad.abs().max()) + 1e-6, name
    for (name, p), (_, q) in zip(ours.named_buffers(), ref.named_buffers(), strict=True):
        assert torch.allclose(p.float(), q.float(), rtol=1e-5, atol=1e-6), name


def test_input_norm_momentum_none_is_a_cumulative_average():
    torch.manual_seed(0)
    ours = UNet(channels=4, depth=4, out_channels=4)
    ours.input_norm.momentum = None
    ref = copy.deepcopy(ours)
    for seed in range(3):
        spec = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
        ours.input_norm(spec)
        nn.BatchNorm2d.forward(ref.input_norm, spec)
    assert torch.allclose(ours.input_norm.running_mean, ref.input_norm.running_mean, rtol=1e-6)
    assert torch.allclose(ours.input_norm.running_var, ref.input_norm.running_var, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_upsample_is_exact_and_keeps_dtype_and_memory_format(dtype):
    x = torch.randn(2, 3, 5, 7).to(dtype)
    expected = F.interpolate(x.float(), scale_factor=2.0, mode="nearest").to(dtype)
    for layout in (torch.contiguous_format, torch.channels_last):
        y = upsample_nearest2x(x.contiguous(memory_format=layout))
        assert y.dtype == dtype and torch.equal(y, expected)
        assert y.is_contiguous(memory_format=layout)
    # the backward sums each 2x2 block of the gradient
    leaf = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(1, 2, 6, 8, dtype=torch.float64)
    upsample_nearest2x(leaf).backward(grad)
    assert torch.allclose(leaf.grad, grad.view(1, 2, 3, 2, 4, 2).sum(dim=(3, 5)))


def test_transposed_decoder_conv_equals_upsample_then_conv():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 4, 10, 14, generator=gen, dtype=torch.float64)
    merged = upsample_conv3x3(x, w)
    literal = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, padding=1)
    assert merged.shape == literal.shape and relative(merged, literal) < 1e-13
    gx, gw = torch.autograd.grad(merged, (x, w), grad)
    rx, rw = torch.autograd.grad(literal, (x, w), grad)
    assert relative(gx, rx) < 1e-13 and relative(gw, rw) < 1e-13
    layout = upsample_conv3x3(x.detach().contiguous(memory_format=torch.channels_last), w.detach())
    assert relative(layout, literal) < 1e-13


LAYOUTS = ["nchw", "nhwc", "nchw input, channels_last weight"]


def assert_same_function(
    ours: Callable[[Tensor, Tensor], Tensor],
    reference: Callable[[Tensor, Tensor], Tensor],
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    layout: str,
) -> Tensor:
    """``ours`` equals ``reference`` in float64 (values, input and weight gradients) for operands in ``layout``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(weight_shape, generator=gen, dtype=torch.float64)
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    if layout != "nchw":
        weight = weight.to(memory_format=torch.channels_last)  # as model.to() stores it
    x.requires_grad_(), weight.requires_grad_()
    out, expected = ours(x, weight), reference(x, weight)
    assert out.shape == expected.shape and relative(out, expected) < 1e-13
    grad = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    gx, gw = torch.autograd.grad(out, (x, weight), grad)
    rx, rw = torch.autograd.grad(expected, (x, weight), grad)
    assert relative(gx, rx) < 1e-13 and relative(gw, rw) < 1e-13
    return out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("h", "w"), [(5, 7), (1, 1), (4, 2)])
def test_subpixel_decoder_conv_equals_upsample_then_conv(layout, h, w):
    def literal(x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, padding=1)

    phased = assert_same_function(subpixel_conv3x3, literal, (2, 6, h, w), (4, 6, 3, 3), layout)
    if layout != "nchw" and h * w > 1:  # cuDNN's rule: channels-last if either operand is
        assert phased.is_contiguous(memory_format=torch.channels_last) and not phased.is_contiguous()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("c_in", "h", "w"), [(3, 6, 8), (1, 8, 4), (2, 2, 2)])
def test_space_to_depth_encoder_conv_equals_the_strided_conv(layout, c_in, h, w):
    def strided(x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, stride=2, padding=1)

    blocks = assert_same_function(space_to_depth_conv4x4, strided, (2, c_in, h, w), (5, c_in, 4, 4), layout)
    if layout != "nchw" and h * w > 4:  # a 1-channel plain input with a channels_last weight too
        assert blocks.is_contiguous(memory_format=torch.channels_last) and not blocks.is_contiguous()


def test_channels_last_model_with_block_convs_stays_channels_last_from_the_first_layer():
    """The spectrogram (one channel) arrives plain; with a channels_last model the first level's output
    must be channels_last, as cuDNN's strided conv gives it, or every later conv converts layouts."""
    torch.manual_seed(0)
    model = UNet(channels=8, depth=4, out_channels=8).to(memory_format=torch.channels_last)
    set_encoder_conv(model, "space_to_depth")
    set_decoder_conv(model, "subpixel", 0)
    spec = torch.rand(2, 1, 32, 32)
    maps = model.encode(spec)
    assert all(m.is_contiguous(memory_format=torch.channels_last) and not m.is_contiguous() for m in maps[:-1])
    assert model.decode(maps).mask_features.is_contiguous(memory_format=torch.channels_last)


def test_bad_decoder_conv_is_refused():
    with pytest.raises(ValueError, match="decoder_conv must be one of"):
        set_decoder_conv(UNet(channels=4, depth=4, out_channels=4), "bilinear")
    with pytest.raises(ValueError, match="encoder_conv must be one of"):
        set_encoder_conv(UNet(channels=4, depth=4, out_channels=4), "dilated")


def test_config_refuses_an_unknown_decoder_or_encoder_conv():
    from contavsep.config import ConfigError, make_config

    cfg = make_config("tiny", {"train.decoder_conv": "subpixel", "train.encoder_conv": "space_to_depth"})
    assert (cfg.train.decoder_conv, cfg.train.encoder_conv) == ("subpixel", "space_to_depth")
    assert make_config("tiny").train.decoder_conv == "transposed"
    assert make_config("tiny").train.encoder_conv == "strided"
    with pytest.raises(ConfigError, match="train.decoder_conv must be one of"):
        make_config("tiny", {"train.decoder_conv": "bilinear"})
    with pytest.raises(ConfigError, match="train.encoder_conv must be one of"):
        make_config("tiny", {"train.encoder_conv": "dilated"})
