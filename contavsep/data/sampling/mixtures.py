"""Mix-and-separate batches: training mixtures drawn on the fly, fixed seeded test mixtures.

A training mixture pairs ``N`` clips (N = 2 in the paper) of different classes, each randomly
cropped to ``clip_samples``; the engine scales each waveform by 1/N and sums them
(:func:`contavsep.audio.mix_sources`). Sources come from the step's new classes and from the
exemplar memory; how often memory clips are drawn is a config value (``memory.oversample``: the
reference repeats each memory clip 20x in the training list; or a fixed ``memory.share``).

Test mixtures are fixed per task and scored again after every step: see
:mod:`contavsep.data.sampling.evaluation_set`; both build their batches with :func:`collate_clips`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from contavsep.data.format.reader import ClipTable
from contavsep.scenario import Scenario


@dataclass(frozen=True)
class MixtureBatch:
    """The clips of ``B`` mixtures of ``N`` sources each, before mixing.

    Shape:
        - source_wavs: :math:`(B, N, S)` float32 in [-1, 1], unscaled; or the int16 PCM samples
          (a batch for a CUDA device: half the bytes to pin and copy, and the conversion, exact
          either way, runs on the device in :func:`contavsep.audio.mix_sources`).
        - labels: :math:`(B, N)` int64, class-query index (position in the scenario's order).
        - class_ids: :math:`(B, N)` int64, dataset class id.
        - tasks: :math:`(B, N)` int64, step that introduced the class.
        - rows: :math:`(B, N)` int64, dataset row (the instance id for CrossSDC).
        - is_memory: :math:`(B, N)` bool, the source is an exemplar from memory.
        - object_features: :math:`(B, N, D_o)` float32 (one frame's CLIP feature).
        - motion_features: :math:`(B, N, T_m, D_m)` float32.
    """

    source_wavs: torch.Tensor
    labels: torch.Tensor
    class_ids: torch.Tensor
    tasks: torch.Tensor
    rows: torch.Tensor
    is_memory: torch.Tensor
    object_features: torch.Tensor
    motion_features: torch.Tensor

    def to(self, device: torch.device | str) -> MixtureBatch:
        """Copy to ``device``; asynchronous from pinned memory (:meth:`pin_memory`) to CUDA."""
        return MixtureBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=True) for f in fields(self)})

    def pin_memory(self) -> MixtureBatch:
        """The batch in page-locked host memory, so a copy to CUDA can overlap computation."""
        return MixtureBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Tell the CUDA allocator these tensors (copied on another stream) are used on ``stream``."""
        for f in fields(self):
            getattr(self, f.name).record_stream(stream)

    def __len__(self) -> int:
        return self.source_wavs.shape[0]


def crop(audio: np.ndarray, length: int, start: int | None, out: np.ndarray | None = None) -> np.ndarray:
    """``length`` samples of int16 ``audio`` from ``start`` (None = centre), zero-padded if short.

    Written into ``out`` when given (a row of a batch array: no temporary per clip); an int16
    ``out`` receives the samples as they are, a float32 one the samples scaled to [-1, 1].

    Shape: :math:`(S,)` int16 -> :math:`(length,)` float32 in [-1, 1] (or int16).
    """
    if out is None:
        out = np.empty(length, dtype=np.float32)
    if len(audio) <= length:
        piece = audio
        out[len(audio) :] = 0.0
    else:
        if start is None:
            start = (len(audio) - length) // 2
        piece = audio[start : start + length]
    if out.dtype == np.int16:
        out[: len(piece)] = piece
    else:  # int16 -> float32 and the scaling in one pass; x * 2**-15 is exactly x / 32768.
        np.multiply(piece, np.float32(1.0 / 32768.0), out=out[: len(piece)], casting="unsafe")
    return out


def collate_clips(
    table: ClipTable,
    scenario: Scenario,
    rows: np.ndarray,
    is_memory: np.ndarray,
    starts: list[list[int | None]],
    frames: list[list[int | None]],
    length: int,
    pcm: bool = False,
) -> MixtureBatch:
    """Crop and gather the clips of ``B`` mixtures of ``N`` sources (``None`` start / frame = centre).

    ``pcm``: keep the audio as int16 samples (see :class:`MixtureBatch`).

    Shape: ``rows``, ``is_memory``: :math:`(B, N)`; ``starts``, ``frames``: B lists of N.
    """
    B, N = rows.shape
    flat_rows = rows.reshape(-1)
    flat_starts = [s for per_mixture in starts for s in per_mixture]
    flat_frames = [f for per_mixture in frames for f in per_mixture]
    # Every output is one preallocated array filled in place: the clips are views of the
    # memory-mapped cache, so a source costs one crop-and-scale pass and two row copies.
    wavs = np.empty((B * N, length), dtype=np.int16 if pcm else np.float32)
    objects = np.empty((B * N, table.object_features(int(flat_rows[0])).shape[-1]), dtype=np.float32)
    motions = np.empty((B * N, *table.motion_features(int(flat_rows[0])).shape), dtype=np.float32)
    for i, r in enumerate(flat_rows.tolist()):
        crop(table.audio(r), length, flat_starts[i], out=wavs[i])
        per_frame = table.object_features(r)
        f = flat_frames[i]
        objects[i] = per_frame[len(per_frame) // 2 if f is None else f]
        motions[i] = table.motion_features(r)
    class_ids = table.class_ids[rows]
    labels = scenario_labels(scenario, len(table.classes))[class_ids]
    if (labels < 0).any():
        raise ValueError(f"classes {sorted(set(class_ids[labels < 0].tolist()))} are not in the scenario's class order")
    return MixtureBatch(
        source_wavs=torch.from_numpy(wavs.reshape(B, N, length)),
        labels=torch.from_numpy(labels),
        class_ids=torch.from_numpy(class_ids.astype(np.int64)),
        tasks=torch.from_numpy(labels // scenario.classes_per_step),
        rows=torch.from_numpy(rows.astype(np.int64)),
        is_memory=torch.from_numpy(np.ascontiguousarray(is_memory)),
        object_features=torch.from_numpy(objects.reshape(B, N, -1)),
        motion_features=torch.from_numpy(motions.reshape(B, N, *motions.shape[1:])),
    )


def scenario_labels(scenario: Scenario, num_classes: int) -> np.ndarray:
    """Query index of every dataset class id (-1 for classes outside the scenario).

    Shape: :math:`(C,)` int64, indexed by dataset class id.
    """
    table = np.full(num_classes, -1, dtype=np.int64)
    for label, class_id in enumerate(scenario.class_order):
        table[class_id] = label
    return table


class TrainingSampler:
    """Draws training mixtures for one incremental step.

    The pool holds the training rows of ``class_ids`` (weight 1 each) and the ``memory_rows``
    (weight ``oversample`` each, or together a fixed ``share`` of all draws when ``share`` is in
    [0, 1]). With ``different_classes`` the N sources of a mixture have N distinct classes.
    The generator state is part of a trial's resumable state (:meth:`state_dict`).
    """

    def __init__(
        self,
        table: ClipTable,
        scenario: Scenario,
        class_ids: Sequence[int],
        memory_rows: Sequence[int],
        *,
        clip_samples: int,
        num_sources: int = 2,
        different_classes: bool = True,
        oversample: float = 20.0,
        share: float = -1.0,
        seed: int = 0,
    ):
        by_class = table.rows_by_class("train")
        new_rows = np.concatenate([by_class[c] for c in class_ids]) if len(class_ids) else np.zeros(0, np.int64)
        memory = np.asarray(sorted(set(int(r) for r in memory_rows) - set(new_rows.tolist())), dtype=np.int64)
        if len(new_rows) == 0:
            raise ValueError(f"no training clips for classes {list(class_ids)}: check the dataset's train split")
        self.table, self.scenario = table, scenario
        self.rows = np.concatenate([new_rows, memory])
        self.is_memory = np.concatenate([np.zeros(len(new_rows), bool), np.ones(len(memory), bool)])
        self.row_classes = table.class_ids[self.rows]
        if len(memory) and 0.0 <= share <= 1.0:
            weights = np.where(self.is_memory, share / len(memory), (1.0 - share) / len(new_rows))
        else:
            weights = np.where(self.is_memory, float(oversample), 1.0)
        self.weights = weights / weights.sum()
        self.clip_samples, self.num_sources = clip_samples, num_sources
        self.different_classes = different_classes
        if different_classes and len(np.unique(self.row_classes[self.weights > 0])) < num_sources:
            raise ValueError(
                f"mixtures of {num_sources} different classes need at least {num_sources} classes in the pool, "
                f"got {len(np.unique(self.row_classes))}: raise data.classes_per_step or set data.different_classes=false"
            )
        # Lengths of every pool row, so drawing a crop does not touch the clip data.
        self._samples = np.array([len(table.audio(int(r))) for r in self.rows], dtype=np.int64)
        self._frames = np.array([len(table.object_features(int(r))) for r in self.rows], dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    @property
    def memory_share(self) -> float:
        """Expected share of drawn sources that come from memory (before class constraints)."""
        return float(self.weights[self.is_memory].sum())

    def _draw_rows(self) -> np.ndarray:
        picked = np.empty(self.num_sources, dtype=np.int64)
        weights = self.weights.copy()
        for n in range(self.num_sources):
            i = self.rng.choice(len(self.rows), p=weights / weights.sum())
            picked[n] = i
            if self.different_classes:
                weights[self.row_classes == self.row_classes[i]] = 0.0
            else:
                weights[i] = 0.0  # never the same clip twice in one mixture
        return picked

    def sample(self, batch_size: int, pcm: bool = False) -> MixtureBatch:
        """The next ``batch_size`` mixtures; ``pcm``: audio as int16 samples (for a CUDA device)."""
        idx = np.stack([self._draw_rows() for _ in range(batch_size)])
        rows = self.rows[idx]
        # One scalar draw per source, start then frame, in mixture order: this order is the
        # seeded batch sequence (a vectorised draw would consume the generator differently).
        crop_ends = np.maximum(1, self._samples[idx] - self.clip_samples + 1).tolist()
        frame_counts = self._frames[idx].tolist()
        integers = self.rng.integers
        starts: list[list[int | None]] = []
        frames: list[list[int | None]] = []
        for ends_b, counts_b in zip(crop_ends, frame_counts):
            s_row: list[int | None] = []
            f_row: list[int | None] = []
            for end, count in zip(ends_b, counts_b):
                s_row.append(int(integers(0, end)))
                f_row.append(int(integers(0, count)))
            starts.append(s_row)
            frames.append(f_row)
        return collate_clips(
            self.table, self.scenario, rows, self.is_memory[idx], starts, frames, self.clip_samples, pcm=pcm
        )

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
