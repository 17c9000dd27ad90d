"""The audio front end: STFT round trip, log-frequency warp, mask targets, reconstruction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mir_eval.separation import bss_eval_sources

from contavsep.audio import SpectralFrontEnd, log_frequency_grid, mix_sources
from contavsep.config import make_config
from contavsep.testing import synthetic_sources


@pytest.fixture(scope="module")
def paper_front_end() -> SpectralFrontEnd:
    return SpectralFrontEnd(make_config("paper").audio)


def test_paper_grid_is_512x256_warped_to_256x256(paper_front_end: SpectralFrontEnd) -> None:
    wav = torch.randn(2, 65535)
    spec = paper_front_end.stft(wav)
    assert spec.shape == (2, 512, 256) and spec.is_complex()
    warped = paper_front_end.warp(spec.abs().unsqueeze(1))
    assert warped.shape == (2, 1, 256, 256)
    assert paper_front_end.unwarp(warped).shape == (2, 1, 512, 256)


def test_istft_inverts_stft_batched(paper_front_end: SpectralFrontEnd) -> None:
    wav = torch.randn(2, 3, 65535, generator=torch.Generator().manual_seed(0))
    spec = paper_front_end.stft(wav)
    assert spec.shape == (2, 3, 512, 256)
    back = paper_front_end.istft(spec, 65535)
    assert back.shape == wav.shape
    assert torch.allclose(back, wav, atol=1e-5)


@pytest.mark.parametrize("preset", ["paper", "small", "tiny"])
def test_shapes_at_every_preset(preset: str) -> None:
    audio = make_config(preset).audio
    fe = SpectralFrontEnd(audio)
    frames = 1 + audio.clip_samples // audio.hop
    sources = synthetic_sources(2, audio.clip_samples, audio.sample_rate, seed=1)
    mix, scaled = mix_sources(sources)
    spectra = fe.prepare(mix, scaled)
    assert spectra.mix_input.shape == (2, 1, audio.warp_bins, frames)
    assert spectra.target_masks.shape == (2, 2, audio.warp_bins, frames)
    assert spectra.weight.shape == (2, 1, audio.warp_bins, frames)
    assert spectra.mix_spec.shape == (2, audio.n_fft // 2 + 1, frames)
    assert fe.reconstruct(spectra.target_masks, spectra.mix_spec, audio.clip_samples).shape == (
        2,
        2,
        audio.clip_samples,
    )


def _smooth_spectrum(bins: int, frames: int) -> torch.Tensor:
    """Smooth in frequency and time, like a spectral envelope (no harmonic fine structure)."""
    f = torch.linspace(0, 1, bins).unsqueeze(1)
    t = torch.linspace(0, 1, frames).unsqueeze(0)
    envelope = 1.0 + 0.8 * torch.exp(-(((f - 0.15) / 0.2) ** 2)) * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))
    return (envelope + 0.3 * torch.cos(2 * math.pi * 1.5 * f)).unsqueeze(0).unsqueeze(0)


# Linear interpolation error grows with the row spacing at the top of the warped grid:
# about 6 linear bins per warped row at paper size, 13 at tiny (256 -> 64 rows).
@pytest.mark.parametrize(("preset", "tolerance"), [("paper", 2e-3), ("small", 5e-3), ("tiny", 2e-2)])
def test_warp_then_unwarp_is_identity_on_smooth_spectra(preset: str, tolerance: float) -> None:
    audio = make_config(preset).audio
    fe = SpectralFrontEnd(audio)
    frames = 1 + audio.clip_samples // audio.hop
    x = _smooth_spectrum(audio.n_fft // 2 + 1, frames)
    warped = fe.warp(x)
    assert warped.shape == (1, 1, audio.warp_bins, frames)
    relative_error = ((fe.unwarp(warped) - x).abs() / x.abs()).max()
    assert relative_error < tolerance


def test_warp_samples_the_sound_of_pixels_grid(paper_front_end: SpectralFrontEnd) -> None:
    # Warping a ramp whose value is its own bin index returns the sampled (fractional) bin
    # positions, so this checks the grid formula, the coordinate convention and the time axis.
    bins, frames = 512, 256
    ramp = torch.arange(bins, dtype=torch.float64).view(1, 1, bins, 1).expand(1, 1, bins, frames)
    warped = paper_front_end.warp(ramp.contiguous())
    y = np.linspace(-1, 1, 256)
    expected = ((21 ** ((y + 1) / 2) - 11) / 10 + 1) / 2 * (bins - 1)
    assert np.allclose(warped[0, 0].numpy(), expected[:, None], atol=1e-6)
    # Low frequencies are oversampled, high ones are sparse: the log-frequency warp.
    steps = np.diff(expected)
    assert steps[0] < 0.35 and steps[-1] > 6.0

    row_ramp = torch.arange(256, dtype=torch.float64).view(1, 1, 256, 1).expand(1, 1, 256, frames)
    unwarped = paper_front_end.unwarp(row_ramp.contiguous())
    y_lin = np.linspace(-1, 1, bins)
    expected_rows = (np.log(y_lin * 10 + 11) / np.log(21) * 2 - 1 + 1) / 2 * 255
    assert np.allclose(unwarped[0, 0].numpy(), expected_rows[:, None], atol=1e-6)


def test_no_warp_is_identity() -> None:
    audio = make_config("tiny", {"audio.warp_bins": 0, "model.unet_depth": 4}).audio
    fe = SpectralFrontEnd(audio)
    x = torch.rand(2, 3, audio.n_fft // 2 + 1, 10)
    assert fe.grid_bins == audio.n_fft // 2 + 1
    assert torch.equal(fe.warp(x), x) and torch.equal(fe.unwarp(x), x)


def test_mix_sources_divides_by_source_count() -> None:
    sources = torch.randn(3, 2, 100)
    mix, scaled = mix_sources(sources)
    assert torch.allclose(scaled, sources / 2)
    assert torch.allclose(mix, (sources[:, 0] + sources[:, 1]) / 2)


def test_targets_weight_and_input_follow_the_protocol(paper_front_end: SpectralFrontEnd) -> None:
    audio = paper_front_end.cfg
    g = torch.Generator().manual_seed(0)
    first = torch.randn(65535, generator=g)
    # Item 0: two sources that nearly cancel (the mixture is 0.1 x the first source), so the
    # ratio masks are about 10 and 9 and must be clamped to mask_max. Item 1: silence, so the
    # masks are 0 (not NaN) and the weight sits at its lower clamp.
    sources = torch.zeros(2, 2, 65535)
    sources[0, 0], sources[0, 1] = first, -0.9 * first
    spectra = paper_front_end.prepare(sources.sum(dim=1), sources)

    assert torch.isfinite(spectra.target_masks).all()
    assert torch.allclose(spectra.target_masks[0], torch.full_like(spectra.target_masks[0], audio.mask_max))
    assert torch.equal(spectra.target_masks[1], torch.zeros_like(spectra.target_masks[1]))
    assert torch.equal(spectra.weight[1], torch.full_like(spectra.weight[1], audio.weight_min))

    mix_mag = paper_front_end.warp(paper_front_end.stft(sources.sum(dim=1)).abs().unsqueeze(1))
    assert torch.allclose(spectra.mix_input, torch.log1p(mix_mag))
    assert torch.allclose(spectra.weight, torch.log1p(mix_mag).clamp(audio.weight_min, audio.weight_max))
    assert spectra.weight.max() <= audio.weight_max


def test_ratio_masks_below_clamp_are_exact_ratios(paper_front_end: SpectralFrontEnd) -> None:
    sources = synthetic_sources(1, 65535, seed=2)
    mix, scaled = mix_sources(sources)
    spectra = paper_front_end.prepare(mix, scaled)
    source_mags = paper_front_end.warp(paper_front_end.stft(scaled).abs())
    mix_mag = torch.expm1(spectra.mix_input)
    ratio = source_mags / mix_mag
    inside = ratio < paper_front_end.cfg.mask_max
    assert inside.float().mean() > 0.99
    assert torch.allclose(spectra.target_masks[inside], ratio[inside], rtol=1e-3, atol=1e-5)


@pytest.mark.filterwarnings("ignore:mir_eval.separation.bss_eval_sources:FutureWarning")
def test_ideal_ratio_mask_reconstructs_both_sources_above_15_db(paper_front_end: SpectralFrontEnd) -> None:
    # Two harmonic voices with vibrato, note envelopes and breath noise, 65535 samples at
    # 11025 Hz. The masks are the clamped training targets on the warped grid, so this checks
    # target -> unwarp -> mixture magnitude and phase -> iSTFT end to end, warp losses included.
    sources = synthetic_sources(1, 65535, 11025, seed=0)
    mix, scaled = mix_sources(sources)
    spectra = paper_front_end.prepare(mix, scaled)
    estimates = paper_front_end.reconstruct(spectra.target_masks, spectra.mix_spec, 65535)
    sdr, _, _, _ = bss_eval_sources(
        scaled[0].double().numpy(), estimates[0].double().numpy(), compute_permutation=False
    )
    assert (sdr > 15.0).all(), sdr
    # Swapping the masks must destroy the separation: the targets are tied to their sources.
    swapped = paper_front_end.reconstruct(spectra.target_masks.flip(1), spectra.mix_spec, 65535)
    assert torch.linalg.vector_norm(swapped - scaled) > 3 * torch.linalg.vector_norm(estimates - scaled)


def test_buffers_follow_module_and_stay_out_of_state_dict() -> None:
    fe = SpectralFrontEnd(make_config("tiny").audio)
    assert fe.state_dict() == {}
    assert {name for name, _ in fe.named_buffers()} == {"window", "warp_grid", "unwarp_grid"}
    fe64 = SpectralFrontEnd(make_config("tiny").audio).to(torch.float64)
    assert fe64.window.dtype == torch.float64 and fe64.warp_grid.dtype == torch.float64
    wav = torch.randn(2, 16383, dtype=torch.float64)
    assert torch.allclose(fe.stft(wav), fe64.stft(wav))
    # A float32 module on float64 input of another length: grids built for that (dtype, size),
    # cached on this instance only.
    x = torch.rand(1, 2, 256, 40, dtype=torch.float64)
    assert fe.warp(x).dtype == torch.float64 and fe.warp(x).shape == (1, 2, 64, 40)
    assert any(key[-1] == 40 for key in fe._grid_cache)
    assert not SpectralFrontEnd(make_config("tiny").audio)._grid_cache


def test_log_frequency_grid_endpoints() -> None:
    grid = log_frequency_grid(512, 256, 7)
    assert grid.shape == (1, 256, 7, 2)
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0] and torch.allclose(
        grid[0, -1, -1], torch.ones(2, dtype=torch.float64)
    )
    inverse = log_frequency_grid(256, 512, 7, inverse=True)
    forward_of_inverse = (torch.pow(21.0, (inverse[0, :, 0, 1] + 1) / 2) - 11) / 10
    assert torch.allclose(forward_of_inverse, torch.linspace(-1, 1, 512, dtype=torch.float64))


def test_bad_shapes_are_rejected(paper_front_end: SpectralFrontEnd) -> None:
    with pytest.raises(ValueError, match="frequency rows"):
        paper_front_end.warp(torch.rand(1, 1, 256, 256))
    with pytest.raises(ValueError, match="mix_wav"):
        paper_front_end.prepare(torch.rand(2, 100), torch.rand(2, 2, 99))
    with pytest.raises(ValueError, match="masks"):
        paper_front_end.reconstruct(torch.rand(2, 2, 256, 256), torch.rand(3, 512, 256, dtype=torch.complex64), 65535)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_scored_length_excludes_the_ill_conditioned_tail(preset: str) -> None:
    # Sustained tones to the last sample: the final samples are covered only by the far edge of
    # the last Hann window, where a masked (inconsistent) spectrogram is amplified ~1e9 times.
    cfg = make_config(preset).audio
    front_end = SpectralFrontEnd(cfg)
    assert front_end.reconstruction_length(65535) == 65280  # Sound-of-Pixels: hop * (frames - 1)
    t = torch.arange(cfg.clip_samples) / cfg.sample_rate
    tone = lambda f0: sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6))  # noqa: E731
    mix, scaled = mix_sources(torch.stack([tone(220.0), tone(311.0) + 0.05 * torch.randn_like(t)])[None])
    spectra = front_end.prepare(mix, scaled)
    length = front_end.reconstruction_length(cfg.clip_samples)
    estimates = front_end.reconstruct(spectra.target_masks, spectra.mix_spec, length)
    sdr, _, _, _ = bss_eval_sources(
        scaled[0, :, :length].double().numpy(), estimates[0].double().numpy(), compute_permutation=False
    )
    assert (sdr > 8.0).all(), sdr
