"""Every convolution of the compiled training graph gets its operands in the layout it runs in.

cuDNN (and mkldnn) run a conv channels-last when its input or weight is stored that way, and an
operand stored otherwise is converted first: eager, by a copy per conv and per call (in bf16,
after autocast's cast); compiled, by Inductor, which writes it in the conv's layout, beside the
recorded layout where the backward needs that one (the merged transposed-conv kernels were
written twice and converted again in the backward). The layouts come from the model code; these
tests read them where AOT autograd records them, in the forward and backward graphs it hands to
the compiler (Inductor's decompositions, no code generation). That is exact for eager execution
and, for compiled graphs, what Inductor starts from (on a GPU its layout heuristics may still
change the layouts of other tensors).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from functorch.compile import make_boxed_func
from torch import Tensor
from torch._dynamo.backends.common import aot_autograd
from torch._inductor.decomposition import select_decomp_table

from contavsep.models.unet import UNet, set_decoder_conv, set_encoder_conv

CONV_OPS = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)


def stored_channels_last(t: Tensor) -> bool:
    """Whether ``t`` is stored NHWC (one channel included), as cuDNN reads a tensor's layout.

    Written apart from the model's own check (strides against NHWC) so it does not share its
    bugs: the NHWC permutation is a dense row-major tensor, and for one channel the weight
    ``(C, 1, 4, 4)`` of a channels_last model differs from a plain one only in the channel stride.
    """
    if not t.permute(0, 2, 3, 1).is_contiguous():
        return False
    if t.shape[1] == 1:  # both layouts are dense: NHWC stores the (unused) channel stride as 1
        return t.shape[2] * t.shape[3] > 1 and t.stride(1) == 1
    return True


def misplaced_operands(graph: torch.fx.Graph) -> list[str]:
    """Conv operands not stored in the format their conv runs in, one line each."""
    bad = []
    for node in graph.nodes:
        if node.target not in CONV_OPS:
            continue
        backward = node.target is torch.ops.aten.convolution_backward.default
        names = ("grad_output", "input", "weight") if backward else ("input", "weight")
        values = [arg.meta["val"] for arg in node.args[: len(names)]]
        x, w = values[-2], values[-1]
        fmt = torch.channels_last if stored_channels_last(x) or stored_channels_last(w) else torch.contiguous_format
        for name, v in zip(names, values):
            if not v.is_contiguous(memory_format=fmt):
                kind = "transposed " if node.args[len(names) + 4] else ""  # the `transposed` flag
                bad.append(
                    f"{node.target}: {kind}conv {tuple(w.shape)}, {name} {tuple(v.shape)} stride {v.stride()} "
                    f"is not {fmt}"
                )
    return bad


def traced_graphs(model: UNet, spec: Tensor, autocast: bool) -> list[torch.fx.Graph]:
    """The forward and backward graphs of one compiled training forward + backward of ``model``."""
    graphs: list[torch.fx.Graph] = []

    def keep(gm: torch.fx.GraphModule, _inputs: list) -> Callable:
        graphs.append(gm.graph)
        return make_boxed_func(gm.forward)

    torch._dynamo.reset()
    compiled = torch.compile(
        model,
        backend=aot_autograd(fw_compiler=keep, bw_compiler=keep, decompositions=select_decomp_table()),
        fullgraph=True,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = compiled(spec).mask_features
    out.float().square().mean().backward()
    torch._dynamo.reset()
    assert len(graphs) == 2, "expected one forward and one backward graph"
    return graphs


# (memory format, decoder_conv, encoder_conv, bf16 autocast): the GPU defaults first
CASES = [
    (torch.channels_last, "transposed", "strided", True),
    (torch.channels_last, "subpixel", "space_to_depth", False),
    (torch.channels_last, "upsample", "strided", False),
    (torch.contiguous_format, "transposed", "strided", False),
]


@pytest.mark.slow
@pytest.mark.parametrize(("memory_format", "decoder_conv", "encoder_conv", "autocast"), CASES)
def test_compiled_convs_get_operands_in_the_layout_they_run_in(
    memory_format: torch.memory_format, decoder_conv: str, encoder_conv: str, autocast: bool
) -> None:
    torch.manual_seed(0)
    model = UNet(channels=8, depth=5, out_channels=4).to(memory_format=memory_format).train()
    # every decoder level computed by the chosen form (min_pixels 0), as the paper batch's outer levels
    set_decoder_conv(model, decoder_conv, min_pixels=0)
    set_encoder_conv(model, encoder_conv)
    spec = torch.randn(2, 1, 64, 64)
    graphs = traced_graphs(model, spec, autocast)
    convs = sum(node.target in CONV_OPS for g in graphs for node in g.nodes)
    # 5 levels each way; the first one-channel level as a matrix product under space_to_depth
    expected = 2 * (2 * 5 - (encoder_conv == "space_to_depth" and memory_format == torch.channels_last))
    assert convs == expected, f"expected {expected // 2} convs forward and as many backward, found {convs}"
    bad = [line for g in graphs for line in misplaced_operands(g)]
    assert not bad, "conv operands that would be converted on every call:\n" + "\n".join(bad)
