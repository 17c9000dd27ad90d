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
  ``train.decoder_conv``) computes it the literal way.
- :class:`_InputNorm` is ``BatchNorm2d(1)`` of the input spectrogram computed with plain
  reductions in training mode: cuDNN's one-channel batch-norm kernels took ~2.8 ms per paper
  iteration on an H100 for a 2 M-value tensor (more than all the U-Net's forward convolutions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
    return F.conv_transpose2d(x, _phase_kernel(weight), stride=2, padding=1)


DECODER_CONVS = ("transposed", "upsample")
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
            assert self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
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
    """[LeakyReLU] -> 4x4 stride-2 conv -> [BatchNorm]: halves both grid sides."""

    def __init__(self, in_channels: int, out_channels: int, activation: bool, norm: bool):
        super().__init__()
        self.activation = nn.LeakyReLU(0.2) if activation else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(self.activation(x)))


class _Up(nn.Module):
    """ReLU -> nearest 2x upsampling -> 3x3 conv -> [BatchNorm]: doubles both grid sides.

    ``decoder_conv``: "transposed" computes upsampling + conv as one transposed conv
    (:func:`upsample_conv3x3`) when the input has at least ``min_pixels`` pixels (batch x
    H x W), else literally; "upsample" always literally. Same parameters and function either way.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool, decoder_conv: str = "transposed",
                 min_pixels: int = TRANSPOSED_MIN_PIXELS):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.decoder_conv = decoder_conv
        self.min_pixels = min_pixels

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if self.decoder_conv == "transposed" and x.shape[0] * x.shape[2] * x.shape[3] >= self.min_pixels:
            return self.norm(upsample_conv3x3(x, self.conv.weight))
        return self.norm(self.conv(upsample_nearest2x(x)))


def set_decoder_conv(model: nn.Module, decoder_conv: str, min_pixels: int = TRANSPOSED_MIN_PIXELS) -> None:
    """How every U-Net decoder level in ``model`` computes upsampling + 3x3 conv (see :class:`_Up`)."""
    if decoder_conv not in DECODER_CONVS:
        raise ValueError(f"decoder_conv must be one of {', '.join(DECODER_CONVS)}, got '{decoder_conv}'")
    for module in model.modules():
        if isinstance(module, _Up):
            module.decoder_conv = decoder_conv
            module.min_pixels = min_pixels


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
                f"U-Net input must be (B, 1, F, T) with F and T divisible by 2**depth = {step}, "
                f"got {tuple(spec.shape)}"
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
