"""A training batch on the device: the sampled clips plus their spectra and targets."""

from __future__ import annotations

from dataclasses import dataclass

from contavsep.audio import MixtureSpectra
from contavsep.data.sampling.mixtures import MixtureBatch


@dataclass(frozen=True)
class StepBatch:
    """What the engine hands to the model and the strategy hooks for one iteration.

    ``clips`` holds labels, rows (instance ids), memory flags and visual features (B, N, ...);
    ``spectra`` the network input (B, 1, F, T), ratio-mask targets (B, N, F, T) and the loss
    weight (B, 1, F, T) computed on the device by :class:`contavsep.audio.SpectralFrontEnd`.
    """

    clips: MixtureBatch
    spectra: MixtureSpectra
