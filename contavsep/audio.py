"""The audio front end: STFT, log-frequency warp, ratio-mask targets, iSTFT with mixture phase.

The protocol of docs/architecture.md section 4 (Sound-of-Pixels / iQuery / ContAV-Sep):

- Mixtures: every source waveform is divided by the number of sources N, then summed
  (:func:`mix_sources`). Targets are computed from the *scaled* sources.
- STFT: Hann window of ``n_fft`` samples, hop ``hop``, ``center=True``; a clip of
  ``clip_samples`` samples gives ``n_fft // 2 + 1`` bins x ``1 + clip_samples // hop`` frames
  (paper: 512 x 256).
- The network grid: magnitudes resampled along frequency to ``warp_bins`` log-spaced rows
  (paper: 256 x 256) with ``grid_sample`` on the Sound-of-Pixels grid
  ``y_in = (21 ** ((y + 1) / 2) - 11) / 10`` for ``y`` in ``linspace(-1, 1, warp_bins)``;
  the inverse grid ``y = log(10 * y_in + 11) / log(21) * 2 - 1`` brings masks back to the
  linear-frequency bins. ``warp_bins = 0`` disables the warp (the grid is the STFT grid).
- Network input ``log1p(|X_mix|)``, ratio-mask targets ``|X_n| / |X_mix|`` clamped to
  ``[0, mask_max]`` and the loss weight ``clamp(log1p(|X_mix|), weight_min, weight_max)``, all on
  the warped grid (magnitudes are warped first, then combined, as in the reference code).
- Separation: unwarp the predicted mask, multiply by the mixture magnitude, use the mixture
  phase, iSTFT back to the clip length (:meth:`SpectralFrontEnd.reconstruct`).

Everything is batched and runs on the device of its inputs; the Hann window and the warp grids
of the configured clip are non-persistent buffers of :class:`SpectralFrontEnd`, so
``front_end.to(device)`` moves them and checkpoints never contain them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from contavsep.config import AudioConfig

# Smallest mixture magnitude used as a ratio-mask denominator: a bin where the mixture is
# exactly zero (digital silence) gets mask 0 when the sources are silent too, and mask_max
# (after the clamp) when they cancel out exactly, instead of NaN.
_MAG_FLOOR = 1e-10


def mix_sources(source_wavs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the mix-and-separate mixture: every source divided by N, then summed.

    Args:
        source_wavs: the N source waveforms of every mixture.

    Returns:
        ``(mix_wav, scaled_source_wavs)``: the mixture and the sources as they appear in it
        (divided by N); the separation targets and references are the scaled sources.

    Shape:
        - source_wavs: :math:`(B, N, S)` float32 in [-1, 1], or int16 PCM samples (scaled by 2**-15 here)
        - mix_wav: :math:`(B, S)`
        - scaled_source_wavs: :math:`(B, N, S)`
    """
    if source_wavs.dim() != 3:
        raise ValueError(f"source_wavs must be (batch, sources, samples), got shape {tuple(source_wavs.shape)}")
    if source_wavs.dtype == torch.int16:  # PCM samples (a CUDA batch): x * 2**-15 is exact, as on the host
        source_wavs = source_wavs.to(torch.float32) * (1.0 / 32768.0)
    scaled_source_wavs = source_wavs / source_wavs.shape[1]
    return scaled_source_wavs.sum(dim=1), scaled_source_wavs


def log_frequency_grid(in_bins: int, out_bins: int, frames: int, inverse: bool = False) -> torch.Tensor:
    """The Sound-of-Pixels sampling grid for ``grid_sample`` (float64, on the CPU).

    Forward (``inverse=False``): ``out_bins`` log-spaced rows sampled from ``in_bins`` linear
    rows, ``y_in = (21 ** ((y + 1) / 2) - 11) / 10`` for ``y = linspace(-1, 1, out_bins)``.
    Inverse: ``out_bins`` linear rows sampled from ``in_bins`` warped rows,
    ``y_in = log(10 * y + 11) / log(21) * 2 - 1``. The time coordinate is the identity
    ``linspace(-1, 1, frames)``; with ``align_corners=True`` it hits every frame exactly, so only
    the frequency axis is resampled. ``in_bins`` does not enter the coordinates (they are
    normalised to [-1, 1]); it is checked only to reject an empty input grid.

    Shape:
        - output: :math:`(1, out\\_bins, frames, 2)` with (x = time, y = frequency) in [-1, 1]
    """
    if in_bins < 1 or out_bins < 1 or frames < 1:
        raise ValueError(f"grid sizes must be positive, got in_bins={in_bins}, out_bins={out_bins}, frames={frames}")
    y = torch.linspace(-1.0, 1.0, out_bins, dtype=torch.float64)
    if inverse:
        y_in = torch.log(y * 10.0 + 11.0) / math.log(21.0) * 2.0 - 1.0
    else:
        y_in = (torch.pow(21.0, (y + 1.0) / 2.0) - 11.0) / 10.0
    x_in = torch.linspace(-1.0, 1.0, frames, dtype=torch.float64)
    grid_y, grid_x = torch.meshgrid(y_in, x_in, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0)


@dataclass(frozen=True)
class MixtureSpectra:
    """What the separator and the loss need from one batch of mixtures.

    Shape:
        - mix_input: :math:`(B, 1, F_w, T)` real, ``log1p(|X_mix|)`` on the network grid
        - target_masks: :math:`(B, N, F_w, T)` real, ``|X_n| / |X_mix|`` clamped to [0, mask_max]
        - weight: :math:`(B, 1, F_w, T)` real, ``clamp(log1p(|X_mix|), weight_min, weight_max)``
        - mix_spec: :math:`(B, F, T)` complex, the linear-frequency mixture STFT (for
          :meth:`SpectralFrontEnd.reconstruct`)

    ``F = n_fft // 2 + 1``; ``F_w = warp_bins`` (or ``F`` when the warp is off).
    """

    mix_input: torch.Tensor
    target_masks: torch.Tensor
    weight: torch.Tensor
    mix_spec: torch.Tensor


class SpectralFrontEnd(torch.nn.Module):
    """STFT / warp / mask targets / reconstruction for one :class:`AudioConfig`.

    Holds no parameters; its buffers (Hann window, warp and unwarp grids for the configured clip
    length) are non-persistent, follow ``.to(device)`` and never enter a ``state_dict``. Inputs
    of another dtype, device or length get grids built on the fly and remembered per
    instance (keyed by device, dtype and size), never in module-global state.
    """

    window: torch.Tensor
    warp_grid: torch.Tensor
    unwarp_grid: torch.Tensor

    def __init__(self, audio_cfg: AudioConfig):
        super().__init__()
        if audio_cfg.hop > audio_cfg.n_fft:
            raise ValueError(f"hop ({audio_cfg.hop}) must not exceed n_fft ({audio_cfg.n_fft})")
        self.cfg = audio_cfg
        self.n_fft = audio_cfg.n_fft
        self.hop = audio_cfg.hop
        self.freq_bins = audio_cfg.n_fft // 2 + 1
        self.warp_bins = audio_cfg.warp_bins
        self.frames = 1 + audio_cfg.clip_samples // audio_cfg.hop
        # periodic=True is what torch.stft / librosa use for analysis-synthesis with overlap-add.
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        if self.warp_bins > 0:
            warp = log_frequency_grid(self.freq_bins, self.warp_bins, self.frames).float()
            unwarp = log_frequency_grid(self.warp_bins, self.freq_bins, self.frames, inverse=True).float()
        else:
            warp = unwarp = torch.empty(0)
        self.register_buffer("warp_grid", warp, persistent=False)
        self.register_buffer("unwarp_grid", unwarp, persistent=False)
        # Grids for other (device, dtype, frames): built on demand, owned by this instance.
        self._grid_cache: dict[tuple[str, str, torch.dtype, int], torch.Tensor] = {}

    @property
    def grid_bins(self) -> int:
        """Frequency rows of the network grid: ``warp_bins``, or ``n_fft // 2 + 1`` without warp."""
        return self.warp_bins if self.warp_bins > 0 else self.freq_bins

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop={self.hop}, bins={self.freq_bins}->{self.grid_bins}, frames={self.frames}"

    # ------------------------------------------------------------------ STFT

    def _window(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.window.device == device and self.window.dtype == dtype:
            return self.window
        return self.window.to(device=device, dtype=dtype)

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """Complex STFT (Hann, ``center=True``, reflect padding) of real waveforms.

        Shape:
            - wav: :math:`(*, S)` real
            - output: :math:`(*, F, T)` complex, ``F = n_fft // 2 + 1``, ``T = 1 + S // hop``
        """
        if wav.is_complex():
            raise TypeError("stft expects real waveforms")
        lead, samples = wav.shape[:-1], wav.shape[-1]
        spec = torch.stft(
            wav.reshape(-1, samples),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self._window(wav.device, wav.dtype),
            center=True,
            return_complex=True,
        )
        return spec.reshape(*lead, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`stft` (weighted overlap-add), cut or padded to ``length`` samples.

        Shape:
            - spec: :math:`(*, F, T)` complex
            - output: :math:`(*, length)` real
        """
        if not spec.is_complex():
            raise TypeError("istft expects a complex spectrogram")
        lead = spec.shape[:-2]
        wav = torch.istft(
            spec.reshape(-1, *spec.shape[-2:]),
            n_fft=self.n_fft,
            hop_length=self.hop,
            window=self._window(spec.device, spec.real.dtype),
            center=True,
            length=length,
        )
        return wav.reshape(*lead, length)

    def reconstruction_length(self, samples: int) -> int:
        """Samples of a ``samples``-long clip that a masked spectrogram reconstructs reliably.

        With ``center=True`` the last ``samples % hop`` (+ up to one hop) samples are covered
        only by the far edge of the last window, where the overlap-add normaliser is ~1e-9: any
        inconsistency of a masked spectrogram is amplified there by that much (measured: an
        ideal ratio mask scored -17 dB SDR on 16383 samples and +7 dB on the first 16128).
        Sound-of-Pixels' istft returns ``hop * (frames - 1)`` samples and its evaluation cuts the
        references to that length; so do we (paper: 65535 -> 65280 samples).
        """
        frames = 1 + samples // self.hop
        return self.hop * (frames - 1)

    # ------------------------------------------------------------------ warp

    def _grid(self, inverse: bool, frames: int, like: torch.Tensor) -> torch.Tensor:
        buffer = self.unwarp_grid if inverse else self.warp_grid
        if buffer.shape[2] == frames and buffer.device == like.device and buffer.dtype == like.dtype:
            return buffer
        key = ("unwarp" if inverse else "warp", str(like.device), like.dtype, frames)
        grid = self._grid_cache.get(key)
        if grid is None:
            if inverse:
                grid = log_frequency_grid(self.warp_bins, self.freq_bins, frames, inverse=True)
            else:
                grid = log_frequency_grid(self.freq_bins, self.warp_bins, frames)
            grid = grid.to(device=like.device, dtype=like.dtype)
            self._grid_cache[key] = grid
        return grid

    def _resample(self, x: torch.Tensor, in_bins: int, inverse: bool) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected a (batch, channels, freq, frames) tensor, got shape {tuple(x.shape)}")
        if x.shape[2] != in_bins:
            raise ValueError(f"expected {in_bins} frequency rows, got {x.shape[2]} (shape {tuple(x.shape)})")
        if self.warp_bins <= 0:
            return x
        batch, channels, _, frames = x.shape
        grid = self._grid(inverse, frames, x)
        # All (batch, channel) planes share one grid: fold them into channels of a single image
        # so grid_sample needs no per-sample copy of the grid.
        out = F.grid_sample(
            x.reshape(1, batch * channels, in_bins, frames),
            grid,
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return out.reshape(batch, channels, out.shape[2], frames)

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """Linear-frequency rows -> log-frequency network rows (identity if ``warp_bins == 0``).

        Shape:
            - x: :math:`(B, C, F, T)` real, ``F = n_fft // 2 + 1``
            - output: :math:`(B, C, F_w, T)`
        """
        return self._resample(x, self.freq_bins, inverse=False)

    def unwarp(self, x: torch.Tensor) -> torch.Tensor:
        """Log-frequency network rows -> linear-frequency rows (identity if ``warp_bins == 0``).

        Shape:
            - x: :math:`(B, C, F_w, T)` real
            - output: :math:`(B, C, F, T)`, ``F = n_fft // 2 + 1``
        """
        return self._resample(x, self.grid_bins, inverse=True)

    # ------------------------------------------------------------------ training targets

    def prepare(self, mix_wav: torch.Tensor, source_wavs: torch.Tensor) -> MixtureSpectra:
        """Network input, ratio-mask targets and loss weight of a batch of mixtures.

        ``source_wavs`` are the sources as they appear in the mixture (the scaled sources of
        :func:`mix_sources`), so the ideal masks of a mixture sum to about one.

        Shape:
            - mix_wav: :math:`(B, S)`
            - source_wavs: :math:`(B, N, S)`
            - output: :class:`MixtureSpectra` with ``F_w`` rows and ``T = 1 + S // hop`` frames
        """
        if mix_wav.dim() != 2 or source_wavs.dim() != 3 or source_wavs.shape[::2] != mix_wav.shape:
            raise ValueError(
                f"expected mix_wav (B, S) and source_wavs (B, N, S), got {tuple(mix_wav.shape)} and {tuple(source_wavs.shape)}"
            )
        # One STFT call for the mixture and all sources.
        specs = self.stft(torch.cat((mix_wav.unsqueeze(1), source_wavs), dim=1))  # (B, 1 + N, F, T)
        mags = self.warp(specs.abs())
        mix_mag, source_mags = mags[:, :1], mags[:, 1:]
        a = self.cfg
        target_masks = (source_mags / mix_mag.clamp_min(_MAG_FLOOR)).clamp(0.0, a.mask_max)
        return MixtureSpectra(
            mix_input=torch.log1p(mix_mag),
            target_masks=target_masks,
            weight=torch.log1p(mix_mag).clamp(a.weight_min, a.weight_max),
            mix_spec=specs[:, 0],
        )

    def mixture_spectra(self, mix_wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input and mixture STFT when no sources are known (inference).

        Shape:
            - mix_wav: :math:`(B, S)`
            - output: ``(mix_input (B, 1, F_w, T), mix_spec (B, F, T) complex)``
        """
        if mix_wav.dim() != 2:
            raise ValueError(f"expected mix_wav (B, S), got {tuple(mix_wav.shape)}")
        mix_spec = self.stft(mix_wav)
        return torch.log1p(self.warp(mix_spec.abs().unsqueeze(1))), mix_spec

    # ------------------------------------------------------------------ separation

    def reconstruct(self, masks: torch.Tensor, mix_spec: torch.Tensor, length: int) -> torch.Tensor:
        """Separated waveforms: unwarped mask x mixture magnitude, with the mixture phase.

        A real mask times the complex mixture STFT is exactly ``mask * |X_mix| * exp(i phase)``.

        Shape:
            - masks: :math:`(B, N, F_w, T)` real
            - mix_spec: :math:`(B, F, T)` complex
            - output: :math:`(B, N, length)`
        """
        if (
            masks.dim() != 4
            or mix_spec.dim() != 3
            or masks.shape[0] != mix_spec.shape[0]
            or masks.shape[3] != mix_spec.shape[2]
        ):
            raise ValueError(
                f"expected masks (B, N, F_w, T) and mix_spec (B, F, T), got {tuple(masks.shape)} and {tuple(mix_spec.shape)}"
            )
        linear_masks = self.unwarp(masks.to(mix_spec.real.dtype))
        return self.istft(linear_masks * mix_spec.unsqueeze(1), length)
