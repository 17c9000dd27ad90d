"""Separation metrics (SDR/SIR/SAR) and the continual-learning matrices built from them.

Two parts:

- :func:`separation_scores`: BSS Eval ``bss_eval_sources`` without permutation on a batch of
  mixtures, backend ``mir_eval`` (the reference metric of the paper) or ``fast``
  (fast_bss_eval with torch float64 and the same 512-tap distortion filter; it matches mir_eval
  to about 1e-10 dB on the project's test signals, see :mod:`benchmarks.bench_metrics`).
  The Sound-of-Pixels validity check is kept, but every skipped item is counted.
- :class:`ContinualResults`: per-source scores labelled with (step, task of the source's class,
  task whose fixed test set the mixture belongs to) -> matrices ``R[i][j]`` (after step i, on
  task j), per-step means over all seen / old / new classes, forgetting, backward transfer and
  average incremental scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BACKENDS = ("mir_eval", "fast")
METRICS = ("sdr", "sir", "sar")

# The reference code (Sound-of-Pixels evaluate(), kept by iQuery and ContAV-Sep) evaluates an item
# only if, for every source n, np.sum(np.abs(reference_n)) > 1e-5 and
# np.sum(np.abs(estimate_n)) > 1e-5 (strict, on the whole waveform, absolute sum not mean).
# We use the same test and threshold, but count what it skips.
SILENCE_ABS_SUM = 1e-5

# mir_eval.separation.bss_eval_sources projects on 512 delayed copies of the references
# (a 512-tap time-invariant distortion filter); fast_bss_eval must use the same length.
FILTER_TAPS = 512

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class ScoreBatch:
    """BSS Eval scores of a batch of mixtures; skipped items are NaN and counted.

    Shape:
        - sdr, sir, sar: :math:`(B, N)` float64 dB, NaN where ``valid`` is False
        - sdr_mix: :math:`(B, N)` float64 dB, SDR of the unprocessed mixture against each
          reference (NaN where skipped or when no mixture was given)
        - valid: :math:`(B,)` bool, False for items skipped by the silence check
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray
    sdr_mix: np.ndarray
    valid: np.ndarray

    @property
    def skipped(self) -> int:
        """Number of mixtures skipped by the silence check."""
        return int((~self.valid).sum())

    @property
    def sdri(self) -> np.ndarray:
        """SDR improvement over the mixture, ``sdr - sdr_mix``. Shape: :math:`(B, N)`."""
        return self.sdr - self.sdr_mix


def _as_float64(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_complex():
        raise TypeError(f"{name} must be real waveforms")
    t = t.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        # A diverged model must fail loudly, not vanish into the skip count.
        raise ValueError(f"{name} contains NaN or infinite samples")
    return t


def silent_items(waveforms: torch.Tensor, threshold: float = SILENCE_ABS_SUM) -> torch.Tensor:
    """Items where any waveform has ``sum(|x|) <= threshold`` (the reference's silence test).

    Shape:
        - waveforms: :math:`(B, N, S)`
        - output: :math:`(B,)` bool
    """
    return (waveforms.abs().sum(dim=-1) <= threshold).any(dim=-1)


def _mir_eval_scores(references: torch.Tensor, estimates: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mir_eval per item on the CPU; (B, N, S) float64 -> three (B, N) arrays."""
    from mir_eval.separation import bss_eval_sources

    refs, ests = references.cpu().numpy(), estimates.cpu().numpy()
    out = np.empty((3, *refs.shape[:2]))
    with warnings.catch_warnings():
        # mir_eval 0.8 flags bss_eval_sources as deprecated in favour of bss_eval; it is still
        # the function the paper's numbers come from.
        warnings.simplefilter("ignore", FutureWarning)
        for b in range(refs.shape[0]):
            sdr, sir, sar, _ = bss_eval_sources(refs[b], ests[b], compute_permutation=False)
            out[:, b] = sdr, sir, sar
    return out[0], out[1], out[2]


def _fast_scores(references: torch.Tensor, estimates: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fast_bss_eval (torch float64) batched; (B, N, S) -> three (B, N) arrays."""
    import fast_bss_eval

    # Call the torch implementation directly: the package-level dispatcher would send numpy
    # input to its numpy backend, which breaks on numpy 2.x.
    sdr, sir, sar = fast_bss_eval.torch.bss_eval_sources(
        references, estimates, filter_length=FILTER_TAPS, compute_permutation=False
    )
    return sdr.cpu().numpy(), sir.cpu().numpy(), sar.cpu().numpy()


def _fast_sdr(references: torch.Tensor, estimates: torch.Tensor) -> np.ndarray:
    """The SDR of ``bss_eval_sources`` alone (fast_bss_eval, torch float64, no permutation);
    (B, N, S) -> (B, N). Equal to the first output of :func:`_fast_scores` (the same distortion
    filter, solved once instead of also for SIR/SAR) at about 40 % of its time."""
    import fast_bss_eval

    return (
        (-fast_bss_eval.torch.sdr_loss(estimates, references, filter_length=FILTER_TAPS, pairwise=False)).cpu().numpy()
    )


def separation_scores(
    references: ArrayLike,
    estimates: ArrayLike,
    backend: str = "mir_eval",
    mixture: ArrayLike | None = None,
    silence_threshold: float = SILENCE_ABS_SUM,
    sdr_mix: np.ndarray | None = None,
    sdr_only: bool = False,
) -> ScoreBatch:
    """SDR/SIR/SAR of every estimated source against its own reference (no permutation).

    An item (mixture) is skipped, i.e. NaN and ``valid[b] = False``, when any of its references
    or estimates (or its mixture, when given) has ``sum(|x|) <= silence_threshold``; this is the
    reference code's check (``> 1e-5`` required), which also avoids mir_eval's error on an
    all-zero source. Non-finite samples raise ``ValueError`` instead of being skipped.

    Args:
        references: the true (scaled) sources, numpy or torch (any device for ``fast``).
        estimates: the separated sources, same shape.
        backend: ``mir_eval`` (reference, per item on the CPU) or ``fast`` (fast_bss_eval, torch
            float64, batched on the device of ``references``).
        mixture: optional mixture waveforms; if given, ``sdr_mix`` is the SDR of the
            mixture used as the estimate of every source (for the SDR improvement).
        silence_threshold: absolute-sum threshold of the silence check.
        sdr_mix: the mixture's SDR of these items if already known (it does not depend on the
            model, so a fixed test set needs it once); skips the second BSS Eval pass.
        sdr_only: score SDR alone (``fast`` backend only; SIR and SAR are NaN): what validation
            ranks on, at about 40 % of the full BSS Eval's time.

    Shape:
        - references: :math:`(B, N, S)`
        - estimates: :math:`(B, N, S)`
        - mixture: :math:`(B, S)`
        - output: :class:`ScoreBatch` of :math:`(B, N)` arrays
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown metrics backend '{backend}'; choose from {', '.join(BACKENDS)}")
    if sdr_only and backend != "fast":
        raise ValueError("sdr_only needs the 'fast' backend (mir_eval always computes SIR and SAR)")
    refs = _as_float64(references, "references")
    ests = _as_float64(estimates, "estimates").to(refs.device)
    if refs.dim() != 3 or refs.shape != ests.shape:
        raise ValueError(
            f"references and estimates must both be (batch, sources, samples), got {tuple(refs.shape)} and {tuple(ests.shape)}"
        )
    batch, n_src, samples = refs.shape
    invalid = silent_items(refs, silence_threshold) | silent_items(ests, silence_threshold)
    mix = None
    if mixture is not None:
        mix = _as_float64(mixture, "mixture").to(refs.device)
        if tuple(mix.shape) != (batch, samples):
            raise ValueError(f"mixture must be (batch, samples) = {(batch, samples)}, got {tuple(mix.shape)}")
        invalid |= silent_items(mix.unsqueeze(1), silence_threshold)
    valid = ~invalid.cpu().numpy()

    scores = np.full((4, batch, n_src), np.nan)
    index = np.flatnonzero(valid)
    if index.size:
        keep = torch.as_tensor(index, device=refs.device)
        ref_v, est_v = refs[keep], ests[keep]
        if sdr_only:
            scores[0, index] = _fast_sdr(ref_v, est_v)
        else:
            score = _mir_eval_scores if backend == "mir_eval" else _fast_scores
            scores[0, index], scores[1, index], scores[2, index] = score(ref_v, est_v)
        if sdr_mix is not None:
            scores[3, index] = np.asarray(sdr_mix, dtype=np.float64).reshape(batch, n_src)[index]
        elif mix is not None:
            mix_as_estimates = mix[keep].unsqueeze(1).expand(-1, n_src, -1).contiguous()
            # only the mixture's SDR is kept: the fast backend skips its SIR/SAR
            scores[3, index] = (
                _fast_sdr(ref_v, mix_as_estimates)
                if backend == "fast"
                else _mir_eval_scores(ref_v, mix_as_estimates)[0]
            )
    return ScoreBatch(sdr=scores[0], sir=scores[1], sar=scores[2], sdr_mix=scores[3], valid=valid)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


class ContinualResults:
    """Accumulates per-source scores over the incremental steps and summarises them.

    Every evaluated source is one record: (step after which it was evaluated, task of its
    class, task of the test set its mixture belongs to, sdr, sir, sar, mixture sdr). From the
    records:

    - ``R[i][j]`` (:meth:`matrix`): mean over the sources of task j's classes in task j's test
      set, evaluated after step i; NaN for j > i (task not seen yet) and for cells without
      sources. With fixed per-task sets (:mod:`contavsep.data.sampling.evaluation_set`) every
      ``R[i][j]``, ``i >= j``, scores the same mixtures, so a model that does not change has
      forgetting and BWT exactly 0.
    - per step i (:meth:`step_summary`): the mean over *all evaluated sources* of the seen
      classes (the paper's number, as the reference code averages over test mixtures; it is
      not the mean of the task means, which weights tasks equally), the old-class mean
      (tasks < i), the new-class mean (task i), mixture SDR and SDR improvement, and counts.
    - forgetting: for each old task j < L (L = last evaluated step),
      ``max over k in [j, L) of R[k][j] - R[L][j]``, averaged over the old tasks.
    - BWT: mean over j < L of ``R[L][j] - R[j][j]``.
    - average incremental score: mean over evaluated steps of the all-seen mean.

    Skipped mixtures (:attr:`ScoreBatch.skipped`) are counted per step and reported.
    """

    def __init__(self, num_steps: int):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        # step -> column lists task, sdr, sir, sar, sdr_mix (JSON-friendly, append-only).
        self._records: dict[int, dict[str, list]] = {}
        self._skipped: dict[int, int] = {}

    # ------------------------------------------------------------------ input

    def _check_step(self, step: int) -> int:
        step = int(step)
        if not 0 <= step < self.num_steps:
            raise ValueError(f"step {step} is outside [0, {self.num_steps})")
        return step

    def add(
        self,
        step: int,
        task_ids: Sequence[int] | np.ndarray,
        sdr: Sequence[float] | np.ndarray,
        sir: Sequence[float] | np.ndarray,
        sar: Sequence[float] | np.ndarray,
        sdr_mix: Sequence[float] | np.ndarray | None = None,
        skipped: int = 0,
        set_ids: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        """Record the scores of sources evaluated after ``step``.

        ``task_ids[k]`` is the task that introduced the class of source k; ``set_ids[k]`` the
        task whose test set its mixture belongs to (default: ``task_ids``, i.e. every source
        counts towards its own task). NaN scores (skipped items) are not records; pass their
        count as ``skipped``. SIR and SAR may be all NaN (not measured: validation scores SDR
        alone), which leaves their matrices and summaries undefined.

        Shape:
            - task_ids, sdr, sir, sar, sdr_mix, set_ids: :math:`(M,)` (any shape, flattened alike)
        """
        step = self._check_step(step)
        tasks = np.asarray(task_ids, dtype=np.int64).ravel()
        columns = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in zip(METRICS, (sdr, sir, sar))}
        columns["sdr_mix"] = (
            np.full(tasks.shape, np.nan) if sdr_mix is None else np.asarray(sdr_mix, dtype=np.float64).ravel()
        )
        for name, values in columns.items():
            if values.shape != tasks.shape:
                raise ValueError(f"{name} has {values.size} values but task_ids has {tasks.size}")
        if tasks.size and (tasks.min() < 0 or tasks.max() > step):
            raise ValueError(
                f"task ids must be in [0, {step}] after step {step} (only seen tasks are evaluated), "
                f"got {sorted(set(tasks.tolist()))}"
            )
        sets = tasks.copy() if set_ids is None else np.asarray(set_ids, dtype=np.int64).ravel()
        if sets.shape != tasks.shape:
            raise ValueError(f"set_ids has {sets.size} values but task_ids has {tasks.size}")
        if sets.size and (sets.max() > step or (tasks > sets).any()):
            raise ValueError(f"a source of task k is in the test set of a task j with k <= j <= {step}")
        unmeasured = all(np.isnan(columns[name]).all() for name in ("sir", "sar"))
        if np.isnan(columns["sdr"]).any() or (
            not unmeasured and any(np.isnan(columns[name]).any() for name in ("sir", "sar"))
        ):
            raise ValueError(
                "NaN scores are skipped items: leave them out and pass their count as `skipped`"
                " (only SIR and SAR may be NaN, all of them: not measured)"
            )
        if skipped < 0:
            raise ValueError(f"skipped must be >= 0, got {skipped}")
        record = self._records.setdefault(step, {"task": [], "set": [], **{name: [] for name in columns}})
        record["task"].extend(tasks.tolist())
        record["set"].extend(sets.tolist())
        for name, values in columns.items():
            record[name].extend(values.tolist())
        self._skipped[step] = self._skipped.get(step, 0) + int(skipped)

    def add_scores(
        self, step: int, scores: ScoreBatch, task_ids: Sequence[Sequence[int]] | np.ndarray, set_id: int | None = None
    ) -> None:
        """Record a :class:`ScoreBatch`; its skipped items are counted, valid ones recorded.

        ``set_id``: the task whose fixed test set the batch's mixtures belong to (None: every
        source counts towards its own task).

        Shape:
            - task_ids: :math:`(B, N)`, the task of each source's class
        """
        tasks = np.asarray(task_ids, dtype=np.int64)
        if tasks.shape != scores.sdr.shape:
            raise ValueError(f"task_ids must have the scores' shape {scores.sdr.shape}, got {tasks.shape}")
        v = scores.valid
        sets = None if set_id is None else np.full(tasks[v].shape, int(set_id))
        self.add(
            step,
            tasks[v],
            scores.sdr[v],
            scores.sir[v],
            scores.sar[v],
            scores.sdr_mix[v],
            skipped=scores.skipped,
            set_ids=sets,
        )

    # ------------------------------------------------------------------ views

    @property
    def steps(self) -> list[int]:
        """Steps with at least one record or skipped item, ascending."""
        return sorted(set(self._records) | set(self._skipped))

    def _column(self, step: int, name: str) -> np.ndarray:
        integer = name in ("task", "set")
        record = self._records.get(step)
        if record is None:
            return np.empty(0, dtype=np.int64 if integer else np.float64)
        if name == "set" and "set" not in record:  # results saved before test sets were per task
            name = "task"
        return np.asarray(record[name], dtype=np.int64 if integer else np.float64)

    def _in_own_set(self, step: int, task: int) -> np.ndarray:
        """Mask of the records of ``step`` that count towards ``R[step][task]``."""
        return (self._column(step, "task") == task) & (self._column(step, "set") == task)

    def matrix(self, metric: str = "sdr") -> np.ndarray:
        """``R[i][j]``: mean ``metric`` over sources of task j evaluated after step i.

        Shape:
            - output: :math:`(T, T)` float64, NaN where j > i or no source was evaluated
        """
        if metric not in METRICS + ("sdr_mix",):
            raise ValueError(f"unknown metric '{metric}'; choose from {', '.join(METRICS)}, sdr_mix")
        out = np.full((self.num_steps, self.num_steps), np.nan)
        for i in self.steps:
            values = self._column(i, metric)
            for j in range(i + 1):
                out[i, j] = _mean(values[self._in_own_set(i, j)])
        return out

    def counts(self) -> np.ndarray:
        """Number of sources behind each ``R[i][j]``. Shape: :math:`(T, T)` int64."""
        out = np.zeros((self.num_steps, self.num_steps), dtype=np.int64)
        for i in self.steps:
            for j in range(i + 1):
                out[i, j] = int(self._in_own_set(i, j).sum())
        return out

    def step_summary(self, step: int) -> dict[str, Any]:
        """Means after ``step`` over all seen / old / new classes (None where undefined)."""
        step = self._check_step(step)
        tasks = self._column(step, "task")
        out: dict[str, Any] = {"step": step}
        for name in METRICS:
            values = self._column(step, name)
            out[name] = _finite_or_none(_mean(values))
            out[f"{name}_old"] = _finite_or_none(_mean(values[tasks < step]))
            out[f"{name}_new"] = _finite_or_none(_mean(values[tasks == step]))
        sdr, sdr_mix = self._column(step, "sdr"), self._column(step, "sdr_mix")
        has_mix = ~np.isnan(sdr_mix)
        out["sdr_mix"] = _finite_or_none(_mean(sdr_mix[has_mix]))
        out["sdri"] = _finite_or_none(_mean(sdr[has_mix] - sdr_mix[has_mix]))
        out["sources"] = int(tasks.size)
        out["skipped"] = self._skipped.get(step, 0)
        return out

    def summary(self, last_step: int | None = None) -> dict[str, Any]:
        """Everything as of ``last_step`` (default: the last evaluated step); JSON-serialisable.

        Non-finite values (undefined cells, a metric that diverged to inf) become None.
        """
        evaluated = self.steps
        if last_step is None:
            if not evaluated:
                raise ValueError("no scores were added yet")
            last_step = evaluated[-1]
        last = self._check_step(last_step)
        upto = [s for s in evaluated if s <= last]
        matrices = {name: self.matrix(name)[: last + 1, : last + 1] for name in METRICS}
        step_rows = [self.step_summary(s) for s in upto]

        def nested(m: np.ndarray) -> list[list[float | None]]:
            return [[_finite_or_none(x) for x in row] for row in m]

        forgetting: dict[str, Any] = {}
        forgetting_per_task: dict[str, list[float | None]] = {}
        bwt: dict[str, Any] = {}
        average_incremental: dict[str, Any] = {}
        for name, r in matrices.items():
            per_task = []
            for j in range(last):
                earlier = r[j:last, j]
                earlier = earlier[~np.isnan(earlier)]
                per_task.append(float(earlier.max() - r[last, j]) if earlier.size else math.nan)
            per_task_arr = np.asarray(per_task)
            forgetting_per_task[name] = [_finite_or_none(x) for x in per_task]
            forgetting[name] = _finite_or_none(_mean(per_task_arr[~np.isnan(per_task_arr)]))
            transfer = np.asarray([r[last, j] - r[j, j] for j in range(last)])
            bwt[name] = _finite_or_none(_mean(transfer[~np.isnan(transfer)]))
            all_seen = np.asarray([row[name] if row[name] is not None else math.nan for row in step_rows])
            average_incremental[name] = _finite_or_none(_mean(all_seen[~np.isnan(all_seen)]))
        return {
            "num_steps": self.num_steps,
            "last_step": last,
            "final": self.step_summary(last),
            "steps": step_rows,
            "R": {name: nested(m) for name, m in matrices.items()},
            "counts": self.counts()[: last + 1, : last + 1].tolist(),
            "forgetting": forgetting,
            "forgetting_per_task": forgetting_per_task,
            "bwt": bwt,
            "average_incremental": average_incremental,
            "skipped": int(sum(self._skipped.get(s, 0) for s in upto)),
        }

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """All records (JSON-serialisable), so a resumed trial continues exactly."""
        return {
            "num_steps": self.num_steps,
            # unmeasured SIR/SAR (NaN) as null: strict JSON
            "records": {
                str(s): {k: [None if isinstance(x, float) and math.isnan(x) else x for x in v] for k, v in r.items()}
                for s, r in self._records.items()
            },
            "skipped": {str(s): n for s, n in self._skipped.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ContinualResults:
        """Rebuild from :meth:`state_dict` output."""
        out = cls(int(state["num_steps"]))
        for s, record in state["records"].items():
            out._records[int(s)] = {k: list(v) for k, v in record.items()}
        out._skipped = {int(s): int(n) for s, n in state["skipped"].items()}
        return out
