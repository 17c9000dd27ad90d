"""What shared first steps save on a grid sweep (sweep --check), counted before anything runs."""

from contavsep_platform.commands.config import MUSIC21, train_clips_per_class
from contavsep_platform.first_step_plan import (
    PlannedTrial,
    describe,
    planned_trials,
    replay,
)
from contavsep_platform.spaces import load_space, shipped_spaces_dir


def test_replay_loads_a_step_zero_only_once_its_first_trial_has_published_it():
    a1, a2, b1, a3 = (
        PlannedTrial("a1", "A", 10, 100),
        PlannedTrial("a2", "A", 10, 100),
        PlannedTrial("b1", "B", 10, 50),
        PlannedTrial("a3", "A", 10, 100),
    )
    assert replay([a1, a2, b1, a3], 1) == [False, True, False, True]
    # two at a time: a2 starts with a1 (both train A); b1 and a3 start when they end (A is there)
    assert replay([a1, a2, b1, a3], 2) == [False, False, False, True]
    assert replay([a1, a2, b1, a3], 4) == [False, False, False, False]  # everything starts at once
    assert replay([PlannedTrial("x", None, 10, 100)] * 2, 1) == [False, False]  # not shared


def test_the_paper_grid_trains_six_step_zeros_per_seed_instead_of_thirty_two():
    space = load_space(shipped_spaces_dir() / "paper.yaml", storage_uri="file:///tmp/unused")
    clips = train_clips_per_class(MUSIC21, space.trial_config({"strategy.name": "finetune"}))
    trials = planned_trials(space, clips)
    # 32 configurations x 3 seeds (Table 1 with intervals)
    assert len(trials) == 96 and len({t.label for t in trials}) == 96
    # per seed and base separator: one plain step 0 (finetune, lwf, ewc, plop, ewf, joint x 2
    # memory sizes), ContAV-Sep's and AV-CIL's own (x 2 memory sizes each)
    assert len({t.key for t in trials}) == 18 and all(t.key is not None for t in trials)
    assert all(t.step0_iterations == 23_700 for t in trials)
    lines = describe(space, clips, concurrencies=(1, 96))
    assert lines[0].startswith(
        "shared first steps: 96 trials have 18 distinct step-0 key(s) (0 not shared); step 0 is 2,275,200"
    )
    assert (
        "1 trial(s) at a time: 78 step 0s loaded instead of trained, 1,848,600 iterations saved (12.3 % of the sweep)"
        in lines[1]
    )
    assert "96 trial(s) at a time: 0 step 0s loaded" in lines[2]
