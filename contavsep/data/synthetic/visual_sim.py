"""SIMULATED visual features of synthetic clips (there is no video; nothing here is a real model).

They stand in for what the real extractors give on MUSIC-21, with the two correspondences the
method relies on:

- object features (stand-in for CLIP ViT-B/32 on the detected instrument, 512-d, a few frames):
  a fixed class prototype (fixed per class *name*, shared by every synthetic dataset; all
  prototypes share a common "musical instrument" direction, as CLIP features of instruments
  do) plus a per-clip offset (this player, this instrument, this room) plus per-frame noise,
  L2-normalised per frame. Audio and object features therefore agree per class.
- motion features (stand-in for VideoMAE, 8 tokens x 768): the clip's own energy and onset
  envelopes over 8 equal segments (how hard and when the player moves), through a fixed random
  projection, plus a fixed class component and noise. Audio and motion therefore agree per
  class AND per clip (the instance-level correspondence CrossSDC exploits).

The fixed parts come from seeds derived from fixed labels, never from the dataset seed.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

OBJECT_DIM = 512
MOTION_TOKENS = 8
MOTION_DIM = 768
ENVELOPE_POINTS = 16  # samples of each envelope per motion segment
_HOP = 256
_WIN = 512


def _fixed_rng(label: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(label.encode()).digest()[:8], "little"))


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=axis, keepdims=True) + 1e-12)


@functools.lru_cache(maxsize=64)
def object_prototype(class_name: str, dim: int = OBJECT_DIM) -> np.ndarray:
    """The fixed simulated object feature of a class. Shape: :math:`(D_o,)` float64, unit norm."""
    common = _unit(_fixed_rng(f"contavsep-synth/object-common/{dim}").standard_normal(dim))
    unique = _unit(_fixed_rng(f"contavsep-synth/object/{class_name}/{dim}").standard_normal(dim))
    proto = _unit(np.sqrt(0.5) * common + np.sqrt(0.5) * unique)
    proto.setflags(write=False)
    return proto


def object_features(class_name: str, n_frames: int, rng: np.random.Generator, dim: int = OBJECT_DIM) -> np.ndarray:
    """Simulated per-frame object features of one clip. Shape: :math:`(F, D_o)` float32, unit rows."""
    clip = 0.5 * _unit(rng.standard_normal(dim))
    frames = 0.3 * _unit(rng.standard_normal((n_frames, dim)))
    return _unit(object_prototype(class_name, dim)[None, :] + clip[None, :] + frames).astype(np.float32)


def envelope_descriptor(audio: np.ndarray, sample_rate: int, tokens: int = MOTION_TOKENS) -> np.ndarray:
    """Energy and onset (spectral flux) envelopes of a clip over ``tokens`` equal segments.

    Shape: :math:`(S,)` float -> :math:`(T_m, 2 P + 2)` float64 with ``P = ENVELOPE_POINTS``.
    """
    x = np.asarray(audio, dtype=np.float64)
    n_frames = max(1 + (x.shape[0] - _WIN) // _HOP, tokens)
    if x.shape[0] < _WIN + (n_frames - 1) * _HOP:
        x = np.pad(x, (0, _WIN + (n_frames - 1) * _HOP - x.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(x, _WIN)[::_HOP][:n_frames] * np.hanning(_WIN)
    mag = np.abs(np.fft.rfft(frames, axis=1))
    energy = np.log((mag**2).sum(axis=1) + 1e-8)
    flux = np.concatenate([[0.0], np.maximum(np.diff(np.log1p(mag * 10.0), axis=0), 0.0).sum(axis=1)])
    energy = (energy - energy.mean()) / (energy.std() + 1.0)
    flux = flux / (flux.mean() + 1e-8) - 1.0
    bounds = np.linspace(0, n_frames, tokens + 1)
    out = np.zeros((tokens, 2 * ENVELOPE_POINTS + 2))
    for i in range(tokens):
        lo, hi = int(bounds[i]), max(int(bounds[i + 1]), int(bounds[i]) + 1)
        grid = np.linspace(lo, hi - 1, ENVELOPE_POINTS)
        span = np.arange(lo, hi)
        out[i, :ENVELOPE_POINTS] = np.interp(grid, span, energy[lo:hi])
        out[i, ENVELOPE_POINTS : 2 * ENVELOPE_POINTS] = np.interp(grid, span, flux[lo:hi])
        out[i, -2] = energy[lo:hi].mean()
        out[i, -1] = flux[lo:hi].mean()
    return out


@functools.lru_cache(maxsize=4)
def motion_projection(in_dim: int, dim: int = MOTION_DIM) -> np.ndarray:
    """The fixed random projection of envelope descriptors to motion features. Shape: :math:`(D_in, D_m)`."""
    w = _fixed_rng(f"contavsep-synth/motion-projection/{in_dim}x{dim}").standard_normal((in_dim, dim)) / np.sqrt(in_dim)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=64)
def motion_class_component(class_name: str, dim: int = MOTION_DIM) -> np.ndarray:
    """The fixed class part of the simulated motion features. Shape: :math:`(D_m,)` float64."""
    v = _fixed_rng(f"contavsep-synth/motion/{class_name}/{dim}").standard_normal(dim)
    v.setflags(write=False)
    return v


def motion_features(
    audio: np.ndarray,
    sample_rate: int,
    class_name: str,
    rng: np.random.Generator,
    tokens: int = MOTION_TOKENS,
    dim: int = MOTION_DIM,
) -> np.ndarray:
    """Simulated motion features of one clip from its own audio envelope.

    Shape: :math:`(S,)` float audio -> :math:`(T_m, D_m)` float32.
    """
    desc = envelope_descriptor(audio, sample_rate, tokens)
    clip_part = desc @ motion_projection(desc.shape[1], dim)
    noise = rng.standard_normal((tokens, dim))
    return (clip_part + 0.8 * motion_class_component(class_name, dim)[None, :] + 0.5 * noise).astype(np.float32)
