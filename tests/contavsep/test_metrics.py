"""SDR/SIR/SAR backends and the continual-learning matrices."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from contavsep.audio import SpectralFrontEnd, mix_sources
from contavsep.config import make_config
from contavsep.metrics import (
    SILENCE_ABS_SUM,
    ContinualResults,
    ScoreBatch,
    separation_scores,
)
from contavsep.testing import imperfect_estimates, synthetic_sources


@pytest.fixture(scope="module")
def realistic_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two paper-length mixtures with imperfect separations of two kinds.

    Item 0: references smeared, with 30% leakage of the other source and noise.
    Item 1: the ideal ratio mask on the warped grid, plus 20% leakage and noise.
    """
    sources = synthetic_sources(2, 65535, 11025, seed=3)
    mix, scaled = mix_sources(sources)
    fe = SpectralFrontEnd(make_config("paper").audio)
    spectra = fe.prepare(mix, scaled)
    masked = fe.reconstruct(spectra.target_masks, spectra.mix_spec, 65535)
    estimates = torch.stack(
        (
            imperfect_estimates(scaled[:1], leakage=0.3, noise=0.05, seed=4)[0],
            imperfect_estimates(masked[1:], leakage=0.2, noise=0.02, seed=5)[0],
        )
    )
    return scaled, estimates, mix


@pytest.mark.filterwarnings("error")  # our mir_eval call must silence its deprecation notice itself
def test_fast_matches_mir_eval_within_001_db(realistic_batch) -> None:
    references, estimates, mix = realistic_batch
    ref = separation_scores(references, estimates, backend="mir_eval", mixture=mix)
    fast = separation_scores(references, estimates, backend="fast", mixture=mix)
    assert ref.valid.all() and fast.valid.all() and ref.skipped == 0
    for name in ("sdr", "sir", "sar", "sdr_mix"):
        a, b = getattr(ref, name), getattr(fast, name)
        assert a.shape == (2, 2) and np.isfinite(a).all()
        assert np.abs(a - b).max() < 0.01, (name, a, b)
    # Imperfect, realistic range (not a trivially perfect separation).
    assert (ref.sdr > 2).all() and (ref.sdr < 25).all()
    assert (ref.sar > ref.sdr).all() and (ref.sir > ref.sdr).all()
    assert np.allclose(ref.sdri, ref.sdr - ref.sdr_mix) and (ref.sdri > 0).all()


def test_no_permutation_is_computed(realistic_batch) -> None:
    references, estimates, _ = realistic_batch
    straight = separation_scores(references, estimates, backend="fast")
    swapped = separation_scores(references, estimates.flip(1), backend="fast")
    # Scored against the wrong references, the swapped estimates must score far worse.
    assert (swapped.sdr < straight.sdr - 10).all()


def test_sdr_only_is_the_full_sdr_without_sir_and_sar(realistic_batch) -> None:
    """Validation scores SDR alone: the same SDR as the full BSS Eval (and as mir_eval), no
    permutation, SIR/SAR left NaN, the mixture's SDR as before."""
    references, estimates, mix = realistic_batch
    full = separation_scores(references, estimates, backend="fast", mixture=mix)
    alone = separation_scores(references, estimates, backend="fast", mixture=mix, sdr_only=True)
    np.testing.assert_allclose(alone.sdr, full.sdr, rtol=0, atol=1e-9)
    np.testing.assert_allclose(alone.sdr_mix, full.sdr_mix, rtol=0, atol=1e-9)
    assert np.isnan(alone.sir).all() and np.isnan(alone.sar).all() and alone.valid.all()
    swapped = separation_scores(references, estimates.flip(1), backend="fast", sdr_only=True)
    assert (swapped.sdr < alone.sdr - 10).all()
    with pytest.raises(ValueError, match="sdr_only needs the 'fast' backend"):
        separation_scores(references, estimates, backend="mir_eval", sdr_only=True)


@pytest.mark.parametrize("backend", ["mir_eval", "fast"])
def test_silent_items_are_skipped_and_counted(backend: str) -> None:
    samples = 4096
    references = synthetic_sources(4, samples, seed=7).double()
    estimates = imperfect_estimates(references, seed=8)
    references[1, 0] = 0.0  # a silent reference
    # Absolute sum exactly at the threshold is silent (the reference code needs > 1e-5) ...
    estimates[2, 1] = 0.0
    estimates[2, 1, 0] = SILENCE_ABS_SUM
    # ... and just above it counts as sound.
    estimates[3, 1] = 0.0
    estimates[3, 1, :2] = SILENCE_ABS_SUM
    # The mixture SDR doubles mir_eval's time; one backend covers its skipping.
    mixture = references.sum(dim=1) if backend == "fast" else None
    scores = separation_scores(references, estimates, backend=backend, mixture=mixture)
    assert scores.valid.tolist() == [True, False, False, True]
    assert scores.skipped == 2
    assert np.isnan(scores.sdr[1:3]).all() and np.isnan(scores.sdr_mix[1:3]).all()
    assert np.isfinite(scores.sdr[[0, 3]]).all()
    if mixture is not None:
        assert np.isfinite(scores.sdr_mix[[0, 3]]).all()


def test_all_items_silent_gives_all_nan() -> None:
    scores = separation_scores(torch.zeros(2, 2, 1000), torch.ones(2, 2, 1000), backend="fast")
    assert scores.skipped == 2 and np.isnan(scores.sdr).all()


def test_bad_input_is_rejected() -> None:
    references = torch.randn(1, 2, 1000)
    with pytest.raises(ValueError, match="backend"):
        separation_scores(references, references, backend="museval")
    with pytest.raises(ValueError, match="NaN"):
        separation_scores(references, torch.full_like(references, float("nan")), backend="fast")
    with pytest.raises(ValueError, match="batch, sources, samples"):
        separation_scores(references, references[:, :1], backend="fast")
    with pytest.raises(ValueError, match="mixture"):
        separation_scores(references, references, backend="fast", mixture=torch.ones(1, 999))


def test_without_mixture_sdr_mix_is_nan(realistic_batch) -> None:
    references, estimates, _ = realistic_batch
    scores = separation_scores(references[:1, :, :8000], estimates[:1, :, :8000], backend="fast")
    assert np.isnan(scores.sdr_mix).all() and np.isfinite(scores.sdr).all()


# ---------------------------------------------------------------- continual matrices
#
# T = 3 steps, one task per step. SDR per evaluated source:
#   after step 0: task 0 -> [4, 6]                              R00 = 5
#   after step 1: task 0 -> [7],  task 1 -> [8, 10, 12]          R10 = 7, R11 = 10
#   after step 2: task 0 -> [2],  task 1 -> [6], task 2 -> [9, 11]  R20 = 2, R21 = 6, R22 = 10
# all-seen means (over sources): 5, 37/4 = 9.25, 28/4 = 7 (the mean of task means would be 8.5, 6).
# forgetting: task 0: max(5, 7) - 2 = 5; task 1: 10 - 6 = 4 -> 4.5
# BWT: (2 - 5) + (6 - 10) -> -3.5; average incremental: (5 + 9.25 + 7) / 3
# SIR = SDR + 10 (same differences), SAR = 2 * SDR (differences double); mixture SDR = 1 everywhere.

STEPS = {
    0: ([0, 0], [4.0, 6.0]),
    1: ([0, 1, 1, 1], [7.0, 8.0, 10.0, 12.0]),
    2: ([0, 1, 2, 2], [2.0, 6.0, 9.0, 11.0]),
}


def _filled(last_step: int = 2) -> ContinualResults:
    results = ContinualResults(num_steps=3)
    for step, (tasks, sdr) in STEPS.items():
        if step > last_step:
            break
        sdr_arr = np.asarray(sdr)
        results.add(step, tasks, sdr_arr, sdr_arr + 10, 2 * sdr_arr, sdr_mix=np.ones_like(sdr_arr))
    return results


def test_matrices_match_hand_computation() -> None:
    results = _filled()
    expected = np.array([[5, np.nan, np.nan], [7, 10, np.nan], [2, 6, 10]], dtype=float)
    np.testing.assert_array_equal(results.matrix("sdr"), expected)
    np.testing.assert_array_equal(results.matrix("sir"), expected + 10)
    np.testing.assert_array_equal(results.matrix("sar"), expected * 2)
    assert results.counts().tolist() == [[2, 0, 0], [1, 3, 0], [1, 1, 2]]


def test_summary_matches_hand_computation() -> None:
    summary = _filled().summary()
    json.dumps(summary, allow_nan=False)  # strict JSON: undefined values are None, not NaN
    assert summary["last_step"] == 2 and summary["skipped"] == 0
    steps = summary["steps"]
    assert [row["sdr"] for row in steps] == [5.0, 9.25, 7.0]
    assert [row["sdr_old"] for row in steps] == [None, 7.0, 4.0]
    assert [row["sdr_new"] for row in steps] == [5.0, 10.0, 10.0]
    assert [row["sir"] for row in steps] == [15.0, 19.25, 17.0]
    assert [row["sdri"] for row in steps] == [4.0, 8.25, 6.0]
    assert [row["sources"] for row in steps] == [2, 4, 4]
    assert summary["final"] == steps[-1]
    assert summary["R"]["sdr"] == [[5.0, None, None], [7.0, 10.0, None], [2.0, 6.0, 10.0]]
    assert summary["forgetting"] == {"sdr": 4.5, "sir": 4.5, "sar": 9.0}
    assert summary["forgetting_per_task"]["sdr"] == [5.0, 4.0]
    assert summary["bwt"] == {"sdr": -3.5, "sir": -3.5, "sar": -7.0}
    assert math.isclose(summary["average_incremental"]["sdr"], (5 + 9.25 + 7) / 3)
    assert math.isclose(summary["average_incremental"]["sar"], 2 * (5 + 9.25 + 7) / 3)


def test_summary_as_of_an_earlier_step() -> None:
    for results in (_filled(last_step=1), _filled()):
        summary = results.summary(last_step=1)
        assert summary["last_step"] == 1 and len(summary["steps"]) == 2
        # Task 0 went from 5 to 7: negative forgetting, positive backward transfer.
        assert summary["forgetting"]["sdr"] == -2.0 and summary["bwt"]["sdr"] == 2.0
        assert summary["average_incremental"]["sdr"] == (5 + 9.25) / 2
    first = _filled(last_step=0).summary()
    assert first["forgetting"]["sdr"] is None and first["bwt"]["sdr"] is None
    assert first["average_incremental"]["sdr"] == 5.0


def test_add_scores_counts_skipped_items() -> None:
    nan = np.nan
    scores = ScoreBatch(
        sdr=np.array([[3.0, 5.0], [nan, nan], [1.0, 7.0]]),
        sir=np.array([[4.0, 6.0], [nan, nan], [2.0, 8.0]]),
        sar=np.array([[9.0, 9.0], [nan, nan], [9.0, 9.0]]),
        sdr_mix=np.array([[0.0, 0.0], [nan, nan], [0.0, 0.0]]),
        valid=np.array([True, False, True]),
    )
    results = ContinualResults(num_steps=2)
    results.add_scores(1, scores, task_ids=[[0, 1], [0, 1], [1, 0]])
    summary = results.summary()
    assert summary["skipped"] == 1 and summary["final"]["skipped"] == 1
    assert summary["R"]["sdr"][1] == [(3.0 + 7.0) / 2, (5.0 + 1.0) / 2]
    assert summary["final"]["sources"] == 4


def test_state_dict_round_trips_through_json() -> None:
    results = _filled()
    results.add(2, [2], [3.0], [4.0], [5.0], skipped=3)
    restored = ContinualResults.from_state_dict(json.loads(json.dumps(results.state_dict())))
    assert restored.summary() == results.summary()
    assert restored.summary()["skipped"] == 3


def test_sdr_only_records_leave_sir_and_sar_undefined_and_round_trip_through_strict_json() -> None:
    nan = float("nan")
    results = ContinualResults(num_steps=2)
    results.add(0, [0, 0], [4.0, 6.0], [nan, nan], [nan, nan], sdr_mix=[1.0, 1.0])
    results.add(1, [0, 1], [3.0, 7.0], [nan, nan], [nan, nan], sdr_mix=[1.0, 1.0])
    summary = results.summary()
    assert summary["final"]["sdr"] == 5.0 and summary["forgetting"]["sdr"] == 2.0  # R[0][0] 5 -> R[1][0] 3
    assert summary["final"]["sir"] is None and summary["forgetting"]["sar"] is None
    restored = ContinualResults.from_state_dict(json.loads(json.dumps(results.state_dict(), allow_nan=False)))
    assert restored.summary() == summary
    with pytest.raises(ValueError, match="only SIR and SAR may be NaN, all of them"):
        results.add(1, [0, 1], [3.0, 7.0], [nan, 2.0], [nan, nan])


def test_invalid_records_are_rejected() -> None:
    results = ContinualResults(num_steps=2)
    with pytest.raises(ValueError, match="only seen tasks"):
        results.add(0, [1], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="outside"):
        results.add(2, [0], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="skipped items"):
        results.add(0, [0], [float("nan")], [1.0], [1.0])
    with pytest.raises(ValueError, match="values but task_ids"):
        results.add(0, [0, 0], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="test set of a task j"):
        results.add(1, [1], [1.0], [1.0], [1.0], set_ids=[0])  # a task-1 source in task 0's set
    with pytest.raises(ValueError, match="no scores"):
        results.summary()


def test_sources_count_towards_r_only_in_their_own_tasks_set() -> None:
    """Partners from older tasks join task j's set at step j: they count towards the mean over
    all seen classes, but R[i][k] keeps scoring only task k's own set (the same mixtures)."""
    results = ContinualResults(num_steps=2)
    results.add(0, [0, 0], [4.0, 6.0], [1.0, 1.0], [1.0, 1.0], set_ids=[0, 0])
    # step 1: task 0's set again (the model forgot 1 dB), and task 1's set whose partner is of task 0
    results.add(1, [0, 0, 1, 0], [3.0, 5.0, 8.0, 0.0], [1.0] * 4, [1.0] * 4, set_ids=[0, 0, 1, 1])
    r = results.matrix("sdr")
    assert r[0, 0] == 5.0 and r[1, 0] == 4.0 and r[1, 1] == 8.0  # the 0.0 partner is not in R[1][0]
    assert results.counts().tolist() == [[2, 0], [2, 1]]
    summary = results.summary()
    assert summary["forgetting"]["sdr"] == 1.0 and summary["bwt"]["sdr"] == -1.0
    final = summary["final"]
    assert final["sdr"] == 4.0 and final["sources"] == 4  # every scored source: (3 + 5 + 8 + 0) / 4
    assert final["sdr_old"] == pytest.approx(8.0 / 3) and final["sdr_new"] == 8.0
    # records saved before sets existed read as "every source in its own task's set"
    state = results.state_dict()
    for record in state["records"].values():
        del record["set"]
    old = ContinualResults.from_state_dict(state)
    assert old.matrix("sdr")[1, 0] == pytest.approx(8.0 / 3)
