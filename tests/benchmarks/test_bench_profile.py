"""The kernel profile adds up only device work of the iteration's own stream.

``bench_profile.kernels`` is what issue 11's MFU analysis reads ("where do the 11.65 ms go"). The
profiler also draws ``record_function`` ranges (the optimizer's ``Optimizer.step#Adam.step``) on
the device timeline, spanning kernels it already lists, and the batch's host-to-device copy runs
on the producer's copy stream beside the compute: counted as kernels, both inflate the device
time an optimisation has to win back. No GPU is needed: the split reads the profiler's averaged
events, built here as they come from ``prof.key_averages()``.
"""

from __future__ import annotations

from types import SimpleNamespace

from torch.autograd import DeviceType

from benchmarks.bench_profile import device_rows, kernel_sources, kind_of


def event(key: str, us: float, count: int, device: DeviceType, annotation: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        key=key, self_device_time_total=us, count=count, device_type=device, is_user_annotation=annotation
    )


def test_annotations_and_the_batch_transfer_are_not_counted_as_compute_kernels():
    iters = 10
    events = [
        event("aten::convolution_backward", 23_000, 140, DeviceType.CPU),
        event("aten::copy_", 6_000, 150, DeviceType.CPU),  # launches the batch's HtoD copy
        event("aten::mm", 0, 920, DeviceType.CPU),  # no device time of its own: not a row
        event("sm90_xmma_dgrad_implicit_gemm_indexed", 6_300, 30, DeviceType.CUDA),
        event("sm90_xmma_fprop_implicit_gemm", 3_100, 50, DeviceType.CUDA),
        event("Memcpy HtoD (Pinned -> Device)", 5_760, 80, DeviceType.CUDA),
        event("Optimizer.step#Adam.step", 4_300, 10, DeviceType.CUDA, annotation=True),
    ]
    rows = device_rows(events, iters)
    assert [r[0] for r in rows.kernels] == ["sm90_xmma_dgrad_implicit_gemm_indexed", "sm90_xmma_fprop_implicit_gemm"]
    assert rows.kernels[0] == ("sm90_xmma_dgrad_implicit_gemm_indexed", 630.0, 3)  # per iteration
    assert rows.transfers == [("Memcpy HtoD (Pinned -> Device)", 576.0, 8)]
    assert rows.annotations == [("Optimizer.step#Adam.step", 430.0, 1)]
    assert [r[0] for r in rows.ops] == ["aten::convolution_backward", "aten::copy_"]
    assert sum(r[1] for r in rows.kernels) == 940.0  # 940 us of compute, not 940 + 576 + 430


def test_events_from_an_older_profiler_without_the_annotation_flag_still_split():
    legacy = SimpleNamespace(key="kernel", self_device_time_total=100.0, count=2, device_type=DeviceType.CUDA)
    rows = device_rows([legacy], 2)
    assert rows.kernels == [("kernel", 50.0, 1)] and not rows.annotations


def test_each_kernel_is_attributed_to_the_operators_that_launched_it():
    """ "7 bf16 copy kernels, 0.5 ms" is only actionable with the operation that asked for them."""

    def op(
        name: str, parent: SimpleNamespace | None = None, kernels: tuple[tuple[str, float], ...] = ()
    ) -> SimpleNamespace:
        return SimpleNamespace(
            name=name, cpu_parent=parent, kernels=[SimpleNamespace(name=k, duration=us) for k, us in kernels]
        )

    backward = op("aten::convolution_backward")
    clone = op("aten::clone", backward)
    forward = op("aten::convolution")
    events = [
        backward,
        clone,
        forward,
        op("aten::copy_", clone, (("direct_copy_kernel<bf16>", 70.0),)),
        op("aten::copy_", clone, (("direct_copy_kernel<bf16>", 50.0),)),
        op("aten::copy_", op("aten::to"), (("direct_copy_kernel<bf16>", 8.0),)),
        op("aten::cudnn_convolution", forward, (("sm90_xmma_fprop", 90.0), ("nchwToNhwcKernel", 16.0))),
    ]
    rows = kernel_sources(events, iters=2)
    assert rows[0] == ("direct_copy_kernel<bf16>", "aten::copy_ < aten::clone < aten::convolution_backward", 60.0, 1)
    assert ("sm90_xmma_fprop", "aten::cudnn_convolution < aten::convolution", 45.0, 0) in rows
    assert ("direct_copy_kernel<bf16>", "aten::copy_ < aten::to", 4.0, 0) in rows  # another source, another row
    assert len(rows) == 4


def test_inductor_fused_kernels_are_not_counted_as_the_convolutions_they_are_named_after():
    """Issue 11's H100 profile put such kernels under "convolution" (5.0 ms), hiding how long cuDNN took."""
    assert (
        kind_of("triton_poi_fused_add_convolution_backward_leaky_relu_backward_slice_threshold_backward_91")
        == "elementwise/other"
    )
    assert (
        kind_of(
            "triton_red_fused__native_batch_norm_legit_functional_convolution_backward_native_batch_norm_backward_43"
        )
        == "normalisation"
    )
    assert kind_of("cpp_fused_convolution_backward_sum_7") == "elementwise/other"
    assert kind_of("triton_per_fused_addmm_native_layer_norm_10") == "normalisation"
    # their other kinds are kept: the bf16 weight casts are copies
    assert kind_of("triton_poi_fused__to_copy_62") == "copy"
    assert kind_of("triton_poi_fused__to_copy_add_convolution_stack_transpose_unbind_35") == "copy"
    # the library calls and Inductor's templates keep their kinds
    assert kind_of("aten::convolution_backward") == "convolution"
    assert kind_of("aten::cudnn_convolution_transpose") == "convolution"
    assert kind_of("triton_tem_fused_mm_3") == "matmul"
    assert kind_of("aten::native_layer_norm") == "normalisation"
