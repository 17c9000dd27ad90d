"""Repeats, deduplication, group pruning and the statistics a ranking rests on, against hand
computations (no Ray cluster: the searcher and scheduler are driven as Tune drives them)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from contavsep_platform.comparison import (
    RunRecord,
    compare,
    group_configurations,
    paired_difference,
    pareto_front,
    ranking_table,
    summary_lines,
    t_interval,
)
from contavsep_platform.pruning import GroupASHA, asha_cutoff, rungs
from contavsep_platform.search import GroupedOptunaSearch
from contavsep_platform.spaces import (
    GROUP_KEY,
    REPEAT_KEY,
    SpaceError,
    parse_space,
)

BASE = 'name: unit\nbase: {preset: tiny, data.uri: "file:///tmp/none", data.num_steps: 4, data.classes_per_step: 2}\n'
LWF = "strategies:\n  lwf:\n    strategy.lambda_dist: {loguniform: [0.1, 3.0]}\n"


def _space(extra: str, strategies: str = LWF):
    return parse_space(BASE + strategies + extra, storage_uri="file:///tmp")


def _final(sdr: float, forgetting: float = 1.0, steps: int = 4) -> dict:
    """A trial's last result: ``sdr`` / ``forgetting`` are its validation values; its test values
    (unprefixed) are different numbers, so a searcher that read them would be told other means."""
    return {
        "val/sdr": sdr,
        "val/forgetting/sdr": forgetting,
        "sdr": -100.0 - sdr,
        "forgetting/sdr": 50.0 + forgetting,
        "step": float(steps),
    }


def test_a_grid_search_tells_optuna_its_last_configuration_without_stopping_the_study():
    """Optuna's GridSampler stops the study once the grid is done, which raises outside
    study.optimize: the last configuration of every grid sweep used to fail when told."""
    space = _space("sampler: {type: grid}\n", "strategies:\n  lwf:\n    strategy.lambda_dist: {choice: [0.1, 1.0]}\n")
    searcher = GroupedOptunaSearch(space)
    configs = [searcher.suggest(f"t{i}") for i in range(2)]
    assert searcher.suggest("t2") == Searcher.FINISHED
    assert sorted(c["strategy.lambda_dist"] for c in configs) == [0.1, 1.0]
    for i in range(2):
        searcher.on_trial_complete(f"t{i}", _final(1.0 + i))
    assert sorted(t.value for t in searcher.study.trials) == [1.0, 2.0]


def test_optuna_is_told_the_validation_mean_never_the_test_numbers():
    """By hand: seeds with validation SDR 2 and 5 (test -102 and -105): Optuna gets 3.5; with
    ``select_on: test`` the same results give the test mean -103.5, and the space says so."""
    space = _space("num_samples: 1\nrepeats: {seeds: 2}\n")
    assert space.metric == "val/sdr" and space.objectives[0].key == "val/sdr"
    searcher = GroupedOptunaSearch(space)
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", _final(2.0))
    searcher.on_trial_complete("b", _final(5.0))
    assert searcher.study.trials[0].value == 3.5
    optimistic = _space("num_samples: 1\nrepeats: {seeds: 2}\nselect_on: test\n")
    assert optimistic.metric == "test/sdr" and optimistic.metric_key == "sdr" and optimistic.selection == "test"
    searcher = GroupedOptunaSearch(optimistic)
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", _final(2.0))
    searcher.on_trial_complete("b", _final(5.0))
    assert searcher.study.trials[0].value == -103.5


def test_every_configuration_runs_on_every_seed_and_class_order_and_optuna_gets_the_group_mean():
    space = _space("num_samples: 2\nrepeats: {seeds: 2, class_orders: 2}\n")
    assert space.num_trials == 8
    searcher = GroupedOptunaSearch(space)
    configs = [searcher.suggest(f"t{i}") for i in range(8)]
    assert searcher.suggest("t8") == Searcher.FINISHED  # 2 configurations x 4 repeats, nothing more
    groups = {}
    for c in configs:
        groups.setdefault(c[GROUP_KEY], []).append(c)
    assert len(groups) == 2
    for members in groups.values():
        # the same configuration on seeds 0, 1 x the dataset's order and one shuffled order
        assert len({m["strategy.lambda_dist"] for m in members}) == 1
        assert sorted((m["train.seed"], m["data.shuffle_classes"], m["data.seed"]) for m in members) == [
            (0, False, 0),
            (0, True, 1),
            (1, False, 0),
            (1, True, 1),
        ]
        assert sorted(m[REPEAT_KEY] for m in members) == ["s0-o0", "s0-o1", "s1-o0", "s1-o1"]
    # the repeat keys and bookkeeping keys are not part of what identifies the configuration
    cfg = space.trial_config(configs[0])
    assert cfg.train.seed == configs[0]["train.seed"]

    first = configs[0][GROUP_KEY]
    finals = [3.0, 4.0, 5.0, 8.0]
    for i, value in enumerate(finals):
        assert searcher.study.trials[0].state == optuna.trial.TrialState.RUNNING  # told once the group is done
        searcher.on_trial_complete(f"t{i}", _final(value))
    assert searcher.study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert searcher.study.trials[0].value == pytest.approx(np.mean(finals))
    assert searcher.groups[first].told[0] == "COMPLETE"
    # the second group: one member stopped before the last step -> the configuration is pruned
    searcher.on_trial_complete("t4", _final(9.0))
    searcher.on_trial_complete("t5", _final(9.0, steps=2))
    searcher.on_trial_complete("t6", _final(9.0))
    searcher.on_trial_complete("t7", _final(9.0))
    assert searcher.study.trials[1].state == optuna.trial.TrialState.PRUNED


def test_a_failed_member_fails_the_group_and_save_restore_keeps_the_study(tmp_path):
    space = _space("num_samples: 3\nrepeats: {seeds: 2}\n")
    searcher = GroupedOptunaSearch(space)
    for i in range(2):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", _final(4.0))
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = GroupedOptunaSearch(space)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t1", error=True)
    assert restored.study.trials[0].state == optuna.trial.TrialState.FAIL
    nxt = restored.suggest("t2")  # the study continues where it was
    assert nxt[GROUP_KEY] != searcher.member_of["t0"][0] and nxt["train.seed"] == 0


def test_a_strategy_with_nothing_to_search_runs_once_per_repeat_and_duplicates_share_its_result():
    space = _space(
        "num_samples: 6\nrepeats: {seeds: 2}\nsampler: {type: random, seed: 3}\n", strategies="strategies: [finetune]\n"
    )
    searcher = GroupedOptunaSearch(space)
    configs = [searcher.suggest(f"t{i}") for i in range(2)]
    assert searcher.suggest("t2") == Searcher.FINISHED and searcher.exhausted
    assert configs[0][GROUP_KEY] == configs[1][GROUP_KEY] and len(searcher.groups) == 1
    searcher.on_trial_complete("t0", _final(2.0))
    searcher.on_trial_complete("t1", _final(4.0))
    # every Optuna proposal of the same configuration was told the group's mean, none ran
    values = {t.value for t in searcher.study.trials}
    assert values == {3.0} and len(searcher.study.trials) > 1


def test_a_resolved_configuration_runs_at_most_once_even_when_optuna_proposes_it_again():
    space = _space(
        "num_samples: 4\nsampler: {type: grid, seed: 0}\n",
        strategies="strategies:\n  lwf:\n    strategy.lambda_dist: {choice: [0.3, 1.0]}\n",
    )
    searcher = GroupedOptunaSearch(space)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert configs[2] == Searcher.FINISHED  # the grid has 2 points; num_samples 4 does not run them twice
    assert sorted(c["strategy.lambda_dist"] for c in configs[:2]) == [0.3, 1.0]


def test_multi_objective_spaces_tell_optuna_one_mean_per_objective():
    space = _space(
        "num_samples: 1\nrepeats: {seeds: 2}\nobjectives:\n  - {metric: sdr, mode: max}\n"
        "  - {metric: forgetting/sdr, mode: min}\n"
    )
    searcher = GroupedOptunaSearch(space)
    assert [d.name for d in searcher.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", _final(4.0, 1.0))
    searcher.on_trial_complete("b", _final(6.0, 2.0))
    assert searcher.study.trials[0].values == [5.0, 1.5]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("scheduler: {type: asha, grace_period: 1}\n", "before any strategy has met an old class"),
        ("repeats: {seeds: 0}\n", "repeats need seeds >= 1"),
        ("repeats: {sedes: 2}\n", "did you mean 'seeds'"),
        (
            "objectives:\n  - {metric: sdr, mode: max}\n  - {metric: forgeting/sdr, mode: min}\n",
            "did you mean 'forgetting/sdr'",
        ),
        ("metric: sdr\nobjectives:\n  - {metric: sdr}\n", "either metric/mode or objectives"),
    ],
)
def test_spaces_refuse_early_rungs_and_bad_repeats_or_objectives_in_one_line(extra, message):
    with pytest.raises(SpaceError, match=message) as info:
        _space(extra)
    assert "\n" not in str(info.value)


def test_seeds_and_class_orders_are_repeats_not_searched_keys():
    with pytest.raises(SpaceError, match="use repeats.seeds"):
        _space("", strategies="strategies:\n  lwf:\n    train.seed: {choice: [0, 1]}\n")


# ---------------------------------------------------------------------------- group ASHA


def _trial(group: str, repeat: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"{group}-{repeat}", config={GROUP_KEY: group, REPEAT_KEY: repeat})


def test_asha_rungs_and_cutoff_match_the_hand_computation():
    assert rungs(2, 2, 4) == [2] and rungs(2, 2, 8) == [2, 4] and rungs(2, 3, 20) == [2, 6, 18] and rungs(2, 2, 2) == []
    values = [1.0, 4.0, 2.0, 8.0]
    for rf in (2, 3, 4):
        assert asha_cutoff(values, rf) == pytest.approx(np.percentile(values, (1 - 1 / rf) * 100))
    assert asha_cutoff([], 2) is None


def test_group_asha_judges_the_group_mean_once_every_member_reached_the_rung():
    asha = GroupASHA(metric="sdr", mode="max", max_t=4, grace_period=2, reduction_factor=2, group_size=2)
    result = lambda sdr, step: {"sdr": sdr, "step": float(step)}  # noqa: E731
    a0, a1, b0, b1 = _trial("A", "s0"), _trial("A", "s1"), _trial("B", "s0"), _trial("B", "s1")
    assert asha.on_trial_result(None, a0, result(9.0, 1)) == TrialScheduler.CONTINUE  # step 1: no rung there
    assert asha.on_trial_result(None, a0, result(6.0, 2)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, a1, result(4.0, 2)) == TrialScheduler.CONTINUE  # A's mean 5 is the first
    # B: one member far above A's mean, the other far below; B's mean 4.5 < cutoff 5 -> stopped
    assert asha.on_trial_result(None, b0, result(8.0, 2)) == TrialScheduler.CONTINUE  # waits for its sibling
    assert asha.on_trial_result(None, b1, result(1.0, 2)) == TrialScheduler.STOP
    assert asha.on_trial_result(None, b0, result(7.0, 3)) == TrialScheduler.STOP  # the sibling stops at its next result
    assert asha.on_trial_result(None, b0, result(7.0, 4)) == TrialScheduler.CONTINUE  # never stopped at the last step
    assert asha.recorded[2] == [5.0, 4.5]


def test_the_sweeps_asha_prunes_on_the_validation_value():
    """The scheduler a space gets reads val/sdr: group B leads A on test (the unprefixed value)
    but trails it on validation (4.5 against 5 by hand), so B is stopped at the rung."""
    from contavsep_platform.sweep import make_scheduler

    space = _space(
        "num_samples: 2\nrepeats: {seeds: 2}\nscheduler: {type: asha, grace_period: 2, reduction_factor: 2}\n"
    )
    asha = make_scheduler(space)
    result = lambda val, test: {"val/sdr": val, "sdr": test, "step": 2.0}  # noqa: E731
    a0, a1, b0, b1 = _trial("A", "s0"), _trial("A", "s1"), _trial("B", "s0"), _trial("B", "s1")
    assert asha.on_trial_result(None, a0, result(6.0, 1.0)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, a1, result(4.0, 1.0)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, b0, result(8.0, 9.0)) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, b1, result(1.0, 9.0)) == TrialScheduler.STOP
    assert asha.recorded[2] == [5.0, 4.5]


# ---------------------------------------------------------------------------- statistics


def test_t_interval_and_paired_difference_match_hand_computations():
    e = t_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd sqrt(5/3), t(0.975, 3) = 3.182446
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (e.mean, e.n) == (2.5, 4) and e.low == pytest.approx(2.5 - half) and e.high == pytest.approx(2.5 + half)
    assert e.text() == f"2.50 ± {half:.2f}"
    one = t_interval([3.0])
    assert one.n == 1 and math.isnan(one.low) and one.text() == "3.00" and one.verdict() == "n < 2"
    # paired: differences 1.0, 1.5, 0.5 over the common repeats (s3 has no partner)
    d = paired_difference({"s0": 5.0, "s1": 6.0, "s2": 7.0, "s3": 9.0}, {"s0": 4.0, "s1": 4.5, "s2": 6.5})
    half = 4.302652729911275 * 0.5 / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(1.0) and d.low == pytest.approx(1.0 - half)
    assert d.verdict("max") == "within noise"  # [-0.24, 2.24] contains 0
    clear = paired_difference({"s0": 5.0, "s1": 6.0, "s2": 7.0}, {"s0": 4.0, "s1": 5.1, "s2": 5.9})
    assert clear.verdict("max") == "better" and clear.verdict("min") == "worse"
    with pytest.raises(ValueError, match="NaN"):
        t_interval([1.0, float("nan")])


def _run(cid, repeat, strategy, memory, sdr, forgetting=1.0, complete=True, **params):
    return RunRecord(
        f"{cid}-{repeat}", cid, repeat, strategy, memory, params, {"sdr": sdr, "forgetting/sdr": forgetting}, complete
    )


def test_ranking_pairs_runs_by_repeat_and_says_when_a_lead_is_within_the_noise():
    runs = [
        # fine-tuning without and with memory, ContAV-Sep (two configurations), LwF with one run stopped
        *[_run("ft0", f"s{i}", "finetune", 0, v, 5.0) for i, v in enumerate([1.0, 2.0, 1.5])],
        *[_run("ft1", f"s{i}", "finetune", 1, v, 2.0) for i, v in enumerate([4.0, 5.0, 4.5])],
        *[_run("cav-a", f"s{i}", "contavsep", 1, v, 1.0, strategy_lambda=0.3) for i, v in enumerate([5.0, 6.0, 5.4])],
        *[_run("cav-b", f"s{i}", "contavsep", 1, v, 1.0, strategy_lambda=1.0) for i, v in enumerate([3.0, 3.0, 3.0])],
        _run("lwf", "s0", "lwf", 1, 9.0),
        _run("lwf", "s1", "lwf", 1, 9.0, complete=False),
    ]
    comparison = compare(group_configurations(runs), "sdr", "max")
    assert [r.configuration.method for r in comparison.rows] == [
        "contavsep (mem 1)",
        "finetune (mem 1)",
        "finetune (mem 0)",
    ]
    top = comparison.rows[0]
    assert top.configuration.config_id == "cav-a"  # the better of ContAV-Sep's two configurations
    # paired against fine-tuning with the same memory: differences 1.0, 1.0, 0.9
    assert top.reference == "finetune (mem 1)" and top.vs_reference.mean == pytest.approx(2.9 / 3)
    assert top.vs_reference.verdict() == "better"
    assert comparison.rows[1].vs_reference.mean == pytest.approx(3.0)  # finetune mem 1 vs mem 0
    assert [c.config_id for c in comparison.incomplete] == ["lwf"]  # never ranked on a partial group
    header, rows = ranking_table(comparison)
    assert rows[0][2] == "3" and rows[0][3].startswith("5.47 ± ")
    assert "contavsep (mem 1) is ahead of the runner-up finetune (mem 1)" in summary_lines(comparison)[0]
    # a lead inside the noise is said to be so
    noisy = compare(
        group_configurations([*runs[3:6], *[_run("x", f"s{i}", "lwf", 1, v) for i, v in enumerate([6.0, 3.0, 5.0])]]),
        "sdr",
        "max",
    )
    assert "not distinguishable from" in summary_lines(noisy)[0]


def test_pareto_front_keeps_the_configurations_no_other_beats_on_every_objective():
    runs = [
        _run("a", "s0", "contavsep", 1, 5.0, 1.0),
        _run("b", "s0", "finetune", 1, 6.0, 3.0),
        _run("c", "s0", "lwf", 1, 4.0, 2.0),
        _run("d", "s0", "finetune", 0, 4.0, 0.5),
    ]
    front = pareto_front(group_configurations(runs), [("sdr", "max"), ("forgetting/sdr", "min")])
    assert sorted(c.config_id for c in front) == ["a", "b", "d"]  # c is dominated by a
