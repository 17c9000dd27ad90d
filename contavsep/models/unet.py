"""The spectrogram U-Net shared by both separators (Sound-of-Pixels "unet7" layout).

Encoder: ``depth`` stride-2 4x4 convolutions, ``1 -> C -> 2C -> 4C -> 8C -> 8C ...`` channels
(``C = channels``), LeakyReLU(0.2) before and BatchNorm after every one except the outermost
(no activation, no norm) and the innermost (no norm). Decoder: per level ReLU, nearest 2x
upsampling, 3x3 convolution, BatchNorm (not on the outermost), with the encoder map of the same
level concatenated in front (skip connection). Convolutions have no bias, as in the iQuery /
ContAV-Sep reference (BatchNorm follows them; the outermost conv feeds a mask product instead).

At ``channels=64, depth=7, out_channels=32`` this has 30,274,178 parameters.

Nearest upsampling (the reference's deterministic upsample) is used instead of the bilinear one
of the original Sound-of-Pixels code: same parameters, deterministic backward on CUDA.

Two pieces compute the reference's function by cheaper means on a GPU (same parameters, same
state_dict; equal to the ``F.interpolate`` / ``nn.BatchNorm2d`` computation up to float rounding,
``tests/contavsep/test_models.py`` checks forward and gradients against it):

- :func:`upsample_nearest2x` copies each value into a 2x2 block with expand + reshape. CUDA
  autocast runs ``upsample_nearest2d`` in float32 (it is on autocast's fp32 list), so under bf16
  the reference path cast every decoder map to float32, upsampled it, and the next conv cast it
  back: three full-size copies forward and three backward per level, and an index scatter as the
  backward. Copying is exact in any dtype, so here the map stays in the conv's dtype and the
  backward is a 2x2 sum.
- The decoder's "upsample, then 3x3 conv" is, by default, one stride-2 4x4 transposed
  convolution whose kernel is built from the 3x3 weights (:func:`upsample_conv3x3`): each output
  pixel of the upsampled conv sees only 2x2 distinct input pixels, so the same map costs 16
  instead of 36 multiply-adds per input pixel and channel pair, and the 4x-size upsampled map
  is never written (forward) nor read back (backward). ``decoder_conv="upsample"`` (config key
  ``train.decoder_conv``) computes it the literal way. ``decoder_conv="subpixel"`` computes the
  same merged taps as one *stride-1* 2x2 conv with 4x the output channels (one group per output
  phase), then interleaves the phases (depth-to-space, :func:`subpixel_conv3x3`): the same FLOPs
  as the transposed conv, but cuDNN runs stride-1 forward/backward kernels instead of the strided
  "indexed" dgrad kernels a transposed conv's forward is (issue 11's H100 profile), for one more
  pass over the output map.
- ``encoder_conv="space_to_depth"`` (config key ``train.encoder_conv``) computes each 4x4 stride-2
  encoder conv as a 2x2 stride-1 conv over the padded input rearranged into 2x2 blocks
  (:func:`space_to_depth_conv4x4`): same FLOPs, stride-1 kernels forward and backward (and a
  4-channel instead of a 1-channel first layer), for one more pass over the input map.
- :class:`_InputNorm` is ``BatchNorm2d(1)`` of the input spectrogram computed with plain
  reductions in training mode: cuDNN's one-channel batch-norm kernels took ~2.8 ms per paper
  iteration on an H100 for a 2 M-value tensor (more than all the U-Net's forward convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contavsep.config import DECODER_CONVS, ENCODER_CONVS


def level_channels(channels: int, depth: int) -> list[int]:
    """Output channels of each encoder level, outermost first: ``C * min(2**i, 8)``."""
    return [channels * min(2**i, 8) for i in range(depth)]


@dataclass(frozen=True)
class UNetDecoding:
    """What the decoder gives back.

    Shape:
        - mask_features: :math:`(B, C_m, F, T)`, the outermost decoder output.
        - latent: :math:`(B, 4C, F/8, T/8)`, the decoder feature at 1/8 resolution.
        - decoder_maps: every decoder output, innermost first (the last is ``mask_features``).
    """

    mask_features: Tensor
    latent: Tensor
    decoder_maps: tuple[Tensor, ...]


def upsample_nearest2x(x: Tensor) -> Tensor:
    """Nearest-neighbour 2x upsampling, ``F.interpolate(x, scale_factor=2.0, mode="nearest")``.

    Every value is copied into a 2x2 block (exact in any dtype, so no autocast float32 round
    trip); the backward sums each 2x2 block of the gradient. The memory format of ``x``
    (contiguous or channels_last) is kept.

    Shape:
        - x: :math:`(B, C, H, W)`
        - output: :math:`(B, C, 2H, 2W)`
    """
    b, c, h, w = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
    # channels_last: build the (B, 2H, 2W, C) block copy, then view it back as NCHW
    nhwc = x.permute(0, 2, 3, 1)
    up = nhwc[:, :, None, :, None, :].expand(b, h, 2, w, 2, c).reshape(b, 2 * h, 2 * w, c)
    return up.permute(0, 3, 1, 2)


def _stored_channels_last(t: Tensor) -> bool:
    """Whether a 4-d tensor is stored channels-last (stride 1 across channels), one channel included.

    ``Tensor.is_contiguous`` cannot tell for one channel (both formats count as contiguous), but a
    channels_last model's first conv weight, shape ``(C, 1, 4, 4)``, is stored with strides
    ``(16, 1, 4, 1)``; cuDNN reads those strides and runs that conv channels-last.
    """
    _, c, h, w = t.shape
    return t.stride()[1:] == (1, w * c, c) and t.stride()[1:] != (h * w, w, 1)  # not both (1x1 grids)


def _phase_kernel(weight: Tensor) -> Tensor:
    """The transposed-conv kernel equal to nearest 2x upsampling followed by a 3x3 conv.

    Along each axis, output pixel ``2i`` sees inputs ``i-1, i, i`` through taps ``w0, w1, w2``
    and ``2i+1`` sees ``i, i, i+1``: merged per distinct input, the 4 transposed-conv taps are
    ``[w2, w1 + w2, w0 + w1, w0]`` (stride 2, padding 1).

    Shape:
        - weight: :math:`(C_{out}, C_{in}, 3, 3)`; output: :math:`(C_{in}, C_{out}, 4, 4)`.
    """

    # plain adds (no autocast op): the sums are in the weight's dtype, rounded once by the conv's cast
    def taps(w: Tensor, dim: int) -> Tensor:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim=dim)

    return taps(taps(weight, 2), 3).transpose(0, 1)


def upsample_conv3x3(x: Tensor, weight: Tensor) -> Tensor:
    """``F.conv2d(upsample_nearest2x(x), weight, padding=1)`` as one stride-2 transposed conv.

    Equal up to float rounding (the merged taps are sums of two or four weights); 2.25x fewer
    FLOPs and no upsampled intermediate.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`; weight: :math:`(C_{out}, C_{in}, 3, 3)`
        - output: :math:`(B, C_{out}, 2H, 2W)`
    """
    kernel = _phase_kernel(weight)  # (C_in, C_out, 4, 4), strided as stack + transpose leave it: neither layout
    # Stored in the layout the conv runs in (cuDNN: channels_last when x or weight is). Eager (DDP
    # on a GPU, CPUs), cuDNN otherwise copied it after autocast's bf16 cast, forward and backward,
    # on every call; compiled, Inductor wrote it twice (the conv's layout, and this one saved for
    # the backward, which converted it again).
    channels_last = _stored_channels_last(x) or _stored_channels_last(weight)
    kernel = kernel.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1)


def _phase_kernel_2x2(weight: Tensor) -> Tensor:
    """The stride-1 2x2 kernel of :func:`subpixel_conv3x3`: the merged taps of each output phase.

    Along each axis, output ``2i`` (phase 0) is ``w0 x[i-1] + (w1 + w2) x[i]`` and ``2i+1`` (phase
    1) is ``(w0 + w1) x[i] + w2 x[i+1]``. Over the input padded by one, phase ``a`` at position
    ``i`` is a 2-tap conv at padded position ``i + a``. Output channel ``(2a + b) C_out + o``
    holds phase ``(a, b)`` (row, column) of output channel ``o``.

    Shape:
        - weight: :math:`(C_{out}, C_{in}, 3, 3)`; output: :math:`(4 C_{out}, C_{in}, 2, 2)`.
    """

    def phases(w: Tensor, dim: int) -> Tensor:  # taps along ``dim`` -> (2 phases, ..., 2 taps at dim)
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([torch.stack([w0, w1 + w2], dim=dim), torch.stack([w0 + w1, w2], dim=dim)])

    rows = phases(weight, 2)  # (a, C_out, C_in, 2, 3)
    both = phases(rows, 4)  # (b, a, C_out, C_in, 2, 2)
    c_out, c_in = weight.shape[:2]
    return both.transpose(0, 1).reshape(4 * c_out, c_in, 2, 2)


def subpixel_conv3x3(x: Tensor, weight: Tensor) -> Tensor:
    """``F.conv2d(upsample_nearest2x(x), weight, padding=1)`` as a stride-1 conv and depth-to-space.

    One 2x2 conv over ``x`` padded by one computes all four output phases (:func:`_phase_kernel_2x2`)
    on an ``(H+1) x (W+1)`` grid; phase ``(a, b)`` of output pixel ``(2i+a, 2j+b)`` is at
    ``(i+a, j+b)``. Equal up to float rounding (the same merged taps as :func:`upsample_conv3x3`).
    The output is channels_last when ``x`` or ``weight`` is (cuDNN's rule for a conv).

    Shape:
        - x: :math:`(B, C_{in}, H, W)`; weight: :math:`(C_{out}, C_{in}, 3, 3)`
        - output: :math:`(B, C_{out}, 2H, 2W)`
    """
    b, _, h, w = x.shape
    c_out = weight.shape[0]
    channels_last = _stored_channels_last(x) or _stored_channels_last(weight)
    kernel = _phase_kernel_2x2(weight)
    if channels_last:  # the layout cuDNN wants for the weight, so it does not convert it per call
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel)  # (B, 4 C_out, H+1, W+1)
    if channels_last:  # interleave in NHWC order: the output is channels_last like the input
        phases = y.permute(0, 2, 3, 1).reshape(b, h + 1, w + 1, 2, 2, c_out)
        rows = [
            torch.stack([phases[:, a : a + h, c : c + w, a, c] for c in (0, 1)], dim=3) for a in (0, 1)
        ]  # (B, H, W, 2, C)
        return torch.stack(rows, dim=2).reshape(b, 2 * h, 2 * w, c_out).permute(0, 3, 1, 2)
    phases = y.reshape(b, 2, 2, c_out, h + 1, w + 1)
    rows = [
        torch.stack([phases[:, a, c, :, a : a + h, c : c + w] for c in (0, 1)], dim=-1) for a in (0, 1)
    ]  # (B, C, H, W, 2)
    return torch.stack(rows, dim=3).reshape(b, c_out, 2 * h, 2 * w)


def space_to_depth_conv4x4(x: Tensor, weight: Tensor) -> Tensor:
    """``F.conv2d(x, weight, stride=2, padding=1)`` (4x4 kernel) as a 2x2 stride-1 conv.

    With ``x`` padded by one, output ``(i, j)`` reads padded rows ``2i .. 2i+3``: the 2x2 blocks
    ``i`` and ``i+1`` of the padded map. Rearranged so that each 2x2 block's four pixels are
    channels (``c * 4 + 2p + q`` for row offset ``p``, column offset ``q``, as
    ``F.pixel_unshuffle``), the conv is a valid 2x2 stride-1 conv with ``4 C_in`` input channels
    and the kernel rearranged to match. Equal up to float rounding (same products, summed in
    another order); the output is channels_last when ``x`` or ``weight`` is (cuDNN's rule for a
    conv: the first layer's one-channel input is plain, its weight channels-last). Channels-last
    with fewer than 2 input channels (4 after the rearrangement), the 2x2 conv runs as a matrix
    product over the 16 taps of each output pixel instead. ``H`` and ``W`` must be even.

    Shape:
        - x: :math:`(B, C_{in}, H, W)`; weight: :math:`(C_{out}, C_{in}, 4, 4)`
        - output: :math:`(B, C_{out}, H/2, W/2)`
    """
    b, c, h, w = x.shape
    hb, wb = h // 2 + 1, w // 2 + 1  # 2x2 blocks of the padded map
    c_out = weight.shape[0]
    # kernel tap (2s + p, 2t + q) -> input channel (c, p, q), position (s, t)
    kernel = weight.reshape(c_out, c, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(c_out, 4 * c, 2, 2)
    if _stored_channels_last(x) or _stored_channels_last(weight):
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, H+2, W+2, C)
        blocks = padded.reshape(b, hb, 2, wb, 2, c).permute(0, 1, 3, 5, 2, 4).reshape(b, hb, wb, 4 * c)
        if 4 * c < TENSOR_CORE_MIN_CHANNELS:
            # the one-channel first layer: a (B H/2 W/2, 16) x (16, C_out) matrix product instead of
            # a 4-channel conv (see TENSOR_CORE_MIN_CHANNELS). Row (i, j) holds the taps of blocks
            # (i+s, j+t), s, t in {0, 1}: 4x the input's values, kept for the backward. The product
            # is NHWC, i.e. channels_last.
            patches = torch.cat([blocks[:, s : s + hb - 1, t : t + wb - 1] for s in (0, 1) for t in (0, 1)], dim=-1)
            taps = kernel.permute(0, 2, 3, 1).reshape(c_out, 16 * c)  # columns in the patches' (s, t, channel) order
            return torch.matmul(patches, taps.t()).permute(0, 3, 1, 2)
        return F.conv2d(blocks.permute(0, 3, 1, 2), kernel.contiguous(memory_format=torch.channels_last))
    padded = F.pad(x, (1, 1, 1, 1))
    blocks = padded.reshape(b, c, hb, 2, wb, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, hb, wb)
    return F.conv2d(blocks, kernel)


# Fewer input channels than this after space_to_depth's rearrangement (only the one-channel first
# layer: 4) and that layer runs as a matrix product. Why, unmeasured so far: bf16 tensor-core
# kernels work on channel multiples of 8, and the H100 profile of the strided form showed a generic
# "convolve_common_engine" conv kernel and cuDNN layout transposes, probably the first layer's.
TENSOR_CORE_MIN_CHANNELS = 8
# "transposed" merges the taps on every call (~9x the weight's bytes, forward + backward, whatever
# the batch), and saves 20 of 36 multiply-adds per input pixel and channel pair plus the upsampled
# map's traffic (both per pixel of the batch). Below this many input pixels (batch x H x W) the
# weights outweigh the activations (the inner levels: 512-1024 channels on 2x2..8x8 grids) and
# the level is computed literally. At the paper preset, batch 32: levels from 8x8 inputs merge.
TRANSPOSED_MIN_PIXELS = 1024


class _InputNorm(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode forward is computed with plain reductions.

    Same parameters, buffers and running-statistics update (``momentum``, cumulative average
    when ``momentum`` is None, unbiased running variance) as ``nn.BatchNorm2d``; statistics in
    float32 (float64 for a float64 input). Used for the 1-channel input, where cuDNN's batch-norm kernels are slow; evaluation
    mode (running statistics) is the parent's forward.

    Shape:
        - x: :math:`(B, C, H, W)`; output: same shape and dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats and self.affine) or x.dim() != 4:
            return super().forward(x)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in float32 at least
        var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0, keepdim=True)
        with torch.no_grad():
            assert (
                self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
            )
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
            else:
                factor = self.momentum
            n = xf.numel() // xf.shape[1]
            self.running_mean.copy_(factor * mean.flatten() + (1.0 - factor) * self.running_mean)
            self.running_var.copy_(factor * var.flatten() * (n / max(n - 1, 1)) + (1.0 - factor) * self.running_var)
        normalised = (xf - mean) * torch.rsqrt(var + self.eps)
        out = normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


class _Down(nn.Module):
    """[LeakyReLU] -> 4x4 stride-2 conv -> [BatchNorm]: halves both grid sides.

    ``encoder_conv``: "strided" runs the conv as written; "space_to_depth" as a stride-1 2x2 conv
    over 2x2 blocks (:func:`space_to_depth_conv4x4`). Same parameters and function either way.
    """

    def __init__(
        self, in_channels: int, out_channels: int, activation: bool, norm: bool, encoder_conv: str = "strided"
    ):
        super().__init__()
        self.activation = nn.LeakyReLU(0.2) if activation else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.encoder_conv = encoder_conv

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(x)
        if self.encoder_conv == "space_to_depth":
            return self.norm(space_to_depth_conv4x4(x, self.conv.weight))
        return self.norm(self.conv(x))


class _Up(nn.Module):
    """ReLU -> nearest 2x upsampling -> 3x3 conv -> [BatchNorm]: doubles both grid sides.

    ``decoder_conv``: "transposed" computes upsampling + conv as one transposed conv
    (:func:`upsample_conv3x3`), "subpixel" as a stride-1 conv and depth-to-space
    (:func:`subpixel_conv3x3`), each when the input has at least ``min_pixels`` pixels (batch x
    H x W), else literally; "upsample" always literally. Same parameters and function either way.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: bool,
        decoder_conv: str = "transposed",
        min_pixels: int = TRANSPOSED_MIN_PIXELS,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.decoder_conv = decoder_conv
        self.min_pixels = min_pixels

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if self.decoder_conv != "upsample" and x.shape[0] * x.shape[2] * x.shape[3] >= self.min_pixels:
            merged = subpixel_conv3x3 if self.decoder_conv == "subpixel" else upsample_conv3x3
            return self.norm(merged(x, self.conv.weight))
        return self.norm(self.conv(upsample_nearest2x(x)))


def set_decoder_conv(model: nn.Module, decoder_conv: str, min_pixels: int = TRANSPOSED_MIN_PIXELS) -> None:
    """How every U-Net decoder level in ``model`` computes upsampling + 3x3 conv (see :class:`_Up`)."""
    if decoder_conv not in DECODER_CONVS:
        raise ValueError(f"decoder_conv must be one of {', '.join(DECODER_CONVS)}, got '{decoder_conv}'")
    for module in model.modules():
        if isinstance(module, _Up):
            module.decoder_conv = decoder_conv
            module.min_pixels = min_pixels


def set_encoder_conv(model: nn.Module, encoder_conv: str) -> None:
    """How every U-Net encoder level in ``model`` computes its 4x4 stride-2 conv (see :class:`_Down`)."""
    if encoder_conv not in ENCODER_CONVS:
        raise ValueError(f"encoder_conv must be one of {', '.join(ENCODER_CONVS)}, got '{encoder_conv}'")
    for module in model.modules():
        if isinstance(module, _Down):
            module.encoder_conv = encoder_conv


class UNet(nn.Module):
    """Spectrogram U-Net with an optional conditioning input at the bottleneck.

    Args:
        channels: width of the first conv (``ngf``); deeper levels double it up to 8x.
        depth: number of stride-2 levels (>= 4: the latent is read at 1/8 resolution).
        out_channels: channels of the output mask features.
        condition_channels: extra channels concatenated to the bottleneck before decoding
            (Co-Separation fuses the tiled object feature there); 0 = unconditioned.

    Shape:
        - spec: :math:`(B, 1, F, T)` with ``F`` and ``T`` divisible by ``2**depth``.
        - condition: :math:`(B', C_c, F / 2^{depth}, T / 2^{depth})`.
    """

    def __init__(self, channels: int = 64, depth: int = 7, out_channels: int = 32, condition_channels: int = 0):
        super().__init__()
        if depth < 4:
            raise ValueError(f"U-Net depth must be >= 4 (the latent is the 1/8-resolution decoder map), got {depth}")
        self.depth = depth
        self.condition_channels = condition_channels
        widths = level_channels(channels, depth)
        self.input_norm = _InputNorm(1)
        ins = [1] + widths[:-1]
        self.down = nn.ModuleList(
            _Down(ins[i], widths[i], activation=i > 0, norm=0 < i < depth - 1) for i in range(depth)
        )
        # Innermost first: the innermost level reads the bottleneck (+ condition), every other
        # level reads [encoder skip, decoder map] of equal width, so 2x its encoder width.
        ups = [_Up(widths[-1] + condition_channels, widths[-2], norm=True)]
        for i in range(depth - 2, 0, -1):
            ups.append(_Up(2 * widths[i], widths[i - 1], norm=True))
        ups.append(_Up(2 * widths[0], out_channels, norm=False))
        self.up = nn.ModuleList(ups)
        self._latent_index = depth - 4  # decoder output at encoder level 4, upsampled to 1/8

    def encode(self, spec: Tensor) -> list[Tensor]:
        """Encoder maps, outermost first; the last one is the bottleneck.

        Shape:
            - spec: :math:`(B, 1, F, T)`
            - output[i]: :math:`(B, C_i, F / 2^{i+1}, T / 2^{i+1})`
        """
        step = 2**self.depth
        if spec.dim() != 4 or spec.shape[1] != 1 or spec.shape[2] % step or spec.shape[3] % step:
            raise ValueError(
                f"U-Net input must be (B, 1, F, T) with F and T divisible by 2**depth = {step}, got {tuple(spec.shape)}"
            )
        maps: list[Tensor] = []
        x = self.input_norm(spec)
        for block in self.down:
            x = block(x)
            maps.append(x)
        return maps

    def decode(self, skips: list[Tensor], condition: Tensor | None = None) -> UNetDecoding:
        """Decode encoder maps (possibly repeated per source) with an optional bottleneck condition.

        Shape:
            - skips: as returned by :meth:`encode`, leading dimension :math:`B'`.
            - condition: :math:`(B', C_c, h, w)` matching the bottleneck grid, iff
              ``condition_channels > 0``.
        """
        if (condition is None) != (self.condition_channels == 0):
            raise ValueError(
                f"this U-Net expects {'no' if self.condition_channels == 0 else self.condition_channels} "
                f"condition channels, got {'none' if condition is None else tuple(condition.shape)}"
            )
        x = skips[-1] if condition is None else torch.cat([skips[-1], condition], dim=1)
        outputs: list[Tensor] = []
        for k, block in enumerate(self.up):
            if k > 0:
                x = torch.cat([skips[self.depth - 1 - k], x], dim=1)
            x = block(x)
            outputs.append(x)
        return UNetDecoding(mask_features=x, latent=outputs[self._latent_index], decoder_maps=tuple(outputs))

    def forward(self, spec: Tensor, condition: Tensor | None = None) -> UNetDecoding:
        return self.decode(self.encode(spec), condition)
