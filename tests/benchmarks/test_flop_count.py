"""The MFU numerator counts the transformer's attention on every device.

``bench_engine.flop_counter`` is how the benchmarks count a training iteration's FLOPs (the MFU
numerator). torch's counter has formulas for the CUDA attention kernels only, so on a CPU the
fused attention op counted zero. The oracle here is torch's own count of the same attention
computed by the math backend (explicit matrix products and softmax), which the fused kernel's
count exceeds by exactly the scores its backward recomputes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.bench_engine import flop_counter


def counted(backend: SDPBackend) -> int:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 16, requires_grad=True) for _ in range(3))  # (B, heads, tokens, head dim)
    counter = flop_counter()
    with counter, sdpa_kernel(backend):
        F.scaled_dot_product_attention(q, k, v).square().sum().backward()
    return counter.get_total_flops()


def test_cpu_fused_attention_counts_what_the_math_backend_counts_plus_the_recomputed_scores():
    fused, math = counted(SDPBackend.FLASH_ATTENTION), counted(SDPBackend.MATH)
    product = 2 * (2 * 4) * 64 * 64 * 16  # one (64 x 16) @ (16 x 64) per batch and head, 2 FLOPs per multiply-add
    assert math == 6 * product  # forward QK^T, PV; backward dV, dP, dQ, dK
    # torch's formula for the fused kernels (the CUDA ones too) adds the scores the backward
    # recomputes; the H100 count used it, so CPU and GPU counts agree (90.52 GFLOP per mixture)
    assert fused == 7 * product
