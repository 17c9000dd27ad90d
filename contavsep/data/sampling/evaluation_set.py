"""The fixed test mixtures of a task sequence: one set per task, scored again after every step.

Continual metrics compare a task's score after different steps (forgetting, backward transfer),
so the mixtures behind ``R[i][j]`` must be the *same* for every step ``i >= j``; otherwise a
forgetting number mixes what the model forgot with how hard a freshly drawn test set is (the
noise floor of re-drawn partners was 1-3 dB on the synthetic benchmark).

The set of task ``j`` is drawn once, from a generator seeded by ``(seed, j)`` and the classes of
tasks ``<= j`` only, so it exists unchanged from step ``j`` on:

- every test clip of a task-``j`` class is the *anchor* of ``windows_per_clip`` windows spread
  evenly over the clip (one window when the clip is not longer than a window: nothing to spread);
- each anchor window gets ``pairs_per_clip`` partners: test clips of other classes of tasks
  ``<= j`` (never the same class, never itself), each at one of its own spread windows;
- object features come from the frame nearest the window's centre.

After step ``i`` the engine scores the sets of tasks ``0..i``. A source counts towards
``R[i][j]`` when it is in set ``j`` *and* its class belongs to task ``j`` (partners from older
tasks are in set ``j`` only from step ``j`` on, so counting them towards their own task would
change that task's mixtures between steps); every source counts towards the per-step means over
all seen classes (the paper's number) and the old/new class means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contavsep.data.format.reader import ClipTable
from contavsep.data.sampling.mixtures import MixtureBatch, collate_clips
from contavsep.scenario import Scenario


@dataclass(frozen=True)
class EvaluationSet:
    """The fixed test mixtures of one task.

    Shape:
        - rows: :math:`(P, 2)` int64 dataset rows, anchor first.
        - starts: :math:`(P, 2)` int64 first sample of each source's window.
        - frames: :math:`(P, 2)` int64 object-feature frame of each source.
    """

    task: int
    rows: np.ndarray
    starts: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, table: ClipTable, scenario: Scenario, index: slice, clip_samples: int) -> MixtureBatch:
        """The clips of mixtures ``index`` of the set, cropped at their windows."""
        rows = self.rows[index]
        return collate_clips(
            table,
            scenario,
            rows,
            np.zeros(rows.shape, bool),
            self.starts[index].tolist(),
            self.frames[index].tolist(),
            clip_samples,
        )


def window_starts(num_samples: int, clip_samples: int, windows: int) -> np.ndarray:
    """Starts of up to ``windows`` crops of ``clip_samples`` spread evenly over a clip.

    The first window starts at 0 and the last ends at the clip's end; a clip not longer than one
    window gives the single start 0 (it is zero-padded), and windows never repeat a start.

    Shape: returns :math:`(W,)` int64 with ``1 <= W <= windows``.
    """
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    room = num_samples - clip_samples
    if room <= 0:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, room, windows)).astype(np.int64))


def _frame_at(num_frames: int, centre: float, num_samples: int) -> int:
    """The object-feature frame nearest ``centre`` (frames are spread evenly over the clip)."""
    return int(min(num_frames - 1, max(0, np.floor(centre / max(num_samples, 1) * num_frames))))


def evaluation_set(
    table: ClipTable,
    scenario: Scenario,
    task: int,
    *,
    clip_samples: int,
    split: str = "test",
    windows_per_clip: int = 4,
    pairs_per_clip: int = 2,
    seed: int = 1234,
) -> EvaluationSet:
    """The fixed test mixtures of ``task`` (see the module docstring); identical for equal arguments."""
    if pairs_per_clip < 1:
        raise ValueError(f"pairs_per_clip must be >= 1, got {pairs_per_clip}")
    by_class = table.rows_by_class(split)
    anchors = np.concatenate([by_class[c] for c in scenario.task_class_ids(task)])
    pool = np.concatenate([by_class[c] for c in scenario.seen_class_ids(task)])
    pool_classes = table.class_ids[pool]
    if len(anchors) == 0 or len(np.unique(pool_classes)) < 2:
        raise ValueError(
            f"the {split} split needs clips of task {task} and of at least 2 classes of tasks <= {task} to build"
            f" test mixtures of different classes (data.classes_per_step must be >= 2 for task 0)"
        )
    windows = {int(r): window_starts(len(table.audio(int(r))), clip_samples, windows_per_clip) for r in pool}
    rng = np.random.default_rng([seed, task])
    rows, starts, frames = [], [], []

    def frame(r: int, start: int) -> int:
        n = len(table.audio(r))
        return _frame_at(len(table.object_features(r)), start + min(clip_samples, n) / 2, n)

    for anchor in anchors:
        a = int(anchor)
        others = pool[pool_classes != table.class_ids[a]]
        for start in windows[a]:
            partners = rng.choice(others, size=pairs_per_clip, replace=len(others) < pairs_per_clip)
            for p in partners:
                p = int(p)
                p_start = int(rng.choice(windows[p]))
                rows.append((a, p))
                starts.append((int(start), p_start))
                frames.append((frame(a, int(start)), frame(p, p_start)))
    return EvaluationSet(
        task=task,
        rows=np.asarray(rows, dtype=np.int64),
        starts=np.asarray(starts, dtype=np.int64),
        frames=np.asarray(frames, dtype=np.int64),
    )
