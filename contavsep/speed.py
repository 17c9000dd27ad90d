"""The speed options a run uses: ``train.channels_last``, ``train.fused_optimizer``, ``train.compile``.

Each key is ``auto`` by default: the option the measurements chose for the device the run is on,
so a user gets the fast path on a GPU without knowing the keys, and a CPU run (tests, the demo)
computes exactly what it computed before the GPU defaults existed. An explicit value (``true`` /
``false``, a compile mode or ``off``) always wins.

What ``auto`` resolves to, and the measurement behind it (paper preset, batch 32, bf16 autocast,
one H100 80GB HBM3, ``bash scripts/gpu_mfu.sh``; pipelined training iterations, model FLOPs per
mixture 90.5 G; issue 11):

==========================  =================  ==================  ===========================
option                      1 CUDA device      CUDA under DDP      CPU
==========================  =================  ==================  ===========================
``train.channels_last``     true               true                false
``train.fused_optimizer``   true               true                false
``train.compile``           reduce-overhead    off                 off
==========================  =================  ==================  ===========================

- eager, channels_last + fused Adam: 821 mixtures/s (7.5 % MFU); compiled (``default``):
  1,236 (11.3 %); **CUDA graphs** (``reduce-overhead``) + channels_last + fused: **2,797
  (25.6 %)**; the same without channels_last: 2,482 (22.7 %); with the decoder's literal
  upsample + conv: 2,401 (22.0 %). Compiled without graphs the host launching ~840 kernels is
  the bottleneck (26 ms/iter for 11.7 ms of kernels); graphs replay them in one launch.
- With int16 PCM batches (host prepares 0.14-0.16 instead of 0.21-0.24 ms per mixture): 2,943
  mixtures/s (26.9 %) with these options, 2,874 (26.3 %) with the ``auto`` defaults, same run.
- Cost: ~35-50 s of compilation per graph on the H100, 2 graphs per sequence (step 0, then one
  with a symbolic class count) plus one for strategies that read the U-Net internals (PLOP).
  Two-step ContAV-Sep and PLOP sequences gave the eager run's losses within bf16 noise.
- Under DDP nothing is compiled by ``auto``: no compiled DDP run has been measured on a GPU
  (set ``train.compile`` explicitly to try one).
- Not measured on a GPU yet (``bash scripts/gpu_mfu.sh --kernels``): the U-Net's stride-1 conv
  forms (``train.encoder_conv=space_to_depth``, ``train.decoder_conv=subpixel``), which replace
  cuDNN's strided "indexed" dgrad kernels (~1.2 of the ~10.3 ms of compute kernels per
  iteration) and, with ``space_to_depth``, the one-channel first layer as a tensor-core matrix
  product (the profile's generic ``convolve_common_engine`` conv kernel, a 16x16 wmma GEMM and
  cuDNN's NCHW/NHWC transposes, ~0.5 ms together, are probably this layer's), and
  SDPA backends other than cuDNN's; once measured, a winner becomes ``auto`` here.
  The transposed decoder conv's merged kernel (5 per iteration, up to 8 M values) is now built in
  the layout its conv runs in: eager, cuDNN had copied it after every bf16 cast, forward and
  backward; compiled, Inductor had written it twice and converted it in the backward (~80 MB of
  traffic per paper iteration, ~0.03 ms on an H100). The profile's 7 generic bf16 copies (0.5
  ms) are not these: ``bench_profile``'s kernels-by-launching-operator table will say whose.
- On a CPU everything stays off: compilation costs minutes there and channels_last / the fused
  optimizer change the float rounding of every result the tests and the README's table pin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from contavsep.config import SWITCH_VALUES

AUTO = SWITCH_VALUES[0]  # "auto": the measured default of this device


@dataclass(frozen=True)
class MeasuredSpeed:
    """The last measured training speed of a card: what GPU-hour estimates divide by."""

    card: str
    preset: str  # the model size it was measured at
    batch_size: int
    mixtures_per_s: float  # pipelined training iterations x batch / s, the ``auto`` defaults
    source: str  # the measurement behind it


# The one place the GPU speed lives (sweep --check's GPU-hours read it). Update it with a new
# measurement, on the card named here.
MEASURED_GPU = MeasuredSpeed(
    card="NVIDIA H100 80GB HBM3",
    preset="paper",
    batch_size=32,
    mixtures_per_s=2874.0,
    source="bash scripts/gpu_mfu.sh, the auto defaults with int16 PCM batches (issue 11; 26.3 % MFU)",
)


@dataclass(frozen=True)
class SpeedOptions:
    """The resolved options: what the engine actually runs with."""

    channels_last: bool
    fused_optimizer: bool
    compile: str  # "off" or a torch.compile mode

    def describe(self) -> str:
        """One phrase for the log, e.g. ``channels_last, fused Adam, compile=reduce-overhead``."""
        parts = [
            name for name, on in (("channels_last", self.channels_last), ("fused Adam", self.fused_optimizer)) if on
        ]
        parts.append(f"compile={self.compile}")
        return ", ".join(parts)


def resolve_speed(
    channels_last: str, fused_optimizer: str, compile: str, device: torch.device, world_size: int = 1
) -> SpeedOptions:
    """The options for ``device`` (and ``world_size`` DDP workers) from the config's values.

    Args:
        channels_last, fused_optimizer: ``auto``, ``true`` or ``false`` (``train.*``).
        compile: ``auto``, ``off`` or a torch.compile mode (``train.compile``).
    """
    cuda = device.type == "cuda"

    def switch(value: str) -> bool:
        return cuda if value == AUTO else value == "true"

    if compile == AUTO:
        compile = "reduce-overhead" if cuda and world_size == 1 else "off"
    return SpeedOptions(channels_last=switch(channels_last), fused_optimizer=switch(fused_optimizer), compile=compile)
