"""Training budgets: the reference's iteration formula, its lr drops, the presets' shares, the engine's use."""

import pytest
from torch import nn

from contavsep.budget import (
    PAPER_MIXTURES,
    epoch_draws,
    iterations_per_step,
    plan_step,
    sequence_budget,
)
from contavsep.checkpoint import load_checkpoint
from contavsep.config import PRESETS, ConfigError, make_config
from contavsep.data.format.reader import open_dataset
from contavsep.data.ingest.splits import music21_contavsep_splits
from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
from contavsep.engine import make_optimizers, run_sequence


def music21_train_counts() -> list[int]:
    lists = music21_contavsep_splits()
    return [len(lists.clips["train"][c]) for c in lists.class_order]


def test_paper_budget_is_the_references_on_music21():
    counts = music21_train_counts()
    assert sum(counts) == 840 and len(counts) == 20
    # By hand, as the reference's loader counts: step t lists its 5 new classes' clips 40x and
    # the 5t exemplars (1 per old class) 40 x 20x; 100 epochs of floor(len / 32) batches.
    new = [sum(counts[5 * t : 5 * t + 5]) for t in range(4)]
    assert new == [190, 205, 244, 201]
    by_hand = [100 * ((40 * n + 40 * 20 * 5 * t) // 32) for t, n in enumerate(new)]
    assert by_hand == [23_700, 38_100, 55_500, 62_600]

    budget = sequence_budget(make_config("paper"), counts)
    assert [s.iterations for s in budget.steps] == by_hand
    assert [s.memory_clips for s in budget.steps] == [0, 5, 10, 15]
    assert {s.batch_size for s in budget.steps} == {32}
    assert budget.mixtures == PAPER_MIXTURES == 5_756_800 and budget.share == 1.0


def test_lr_drops_are_the_references_epochs_in_iterations():
    cfg = make_config("paper")
    plan = plan_step(0, 190, 0, cfg)
    per_epoch = 40 * 190 // 32  # 237
    assert plan.iterations == 100 * per_epoch
    assert plan.lr_drops_unet == (31 * per_epoch, 51 * per_epoch)  # lr_steps 30 50, after the 0-based epoch
    assert plan.lr_drops_transformer == (80 * per_epoch,)  # StepLR(80) stepped once per epoch
    assert plan.val_every == per_epoch  # eval_epoch 1


def test_engine_schedulers_follow_the_reference_epoch_by_epoch():
    # 6 clips listed once, batch 2 -> 3 iterations per epoch, 100 epochs.
    cfg = make_config("paper", {"train.dup_trainset": 1, "train.batch_size": 2})
    plan = plan_step(0, 6, 0, cfg)
    assert plan.iterations == 300

    class TwoParts(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet, self.head = nn.Linear(1, 1), nn.Linear(1, 1)

        def unet_parameters(self):
            return self.unet.parameters()

        def head_parameters(self):
            return self.head.parameters()

    opts, scheds = make_optimizers(TwoParts(), cfg, plan)
    for it in range(plan.iterations):
        epoch = it // 3
        # the reference: U-Net lr x0.1 after each epoch index in lr_steps (30, 50); transformer StepLR(80)
        assert opts[0].param_groups[0]["lr"] == pytest.approx(
            1e-4 * 0.1 ** sum(epoch > s for s in (30, 50)), rel=1e-9
        ), it
        assert opts[1].param_groups[0]["lr"] == pytest.approx(1e-4 * 0.1 ** (epoch // 80), rel=1e-9), it
        for o in opts:
            o.step()
        for s in scheds:
            s.step()


def test_fixed_iterations_win_and_keep_the_schedule_shape():
    tiny = make_config("tiny", {"train.iters_per_step": 3})
    assert plan_step(2, 1000, 50, tiny).iterations == 3
    assert plan_step(0, 1000, 0, tiny).lr_drops_unet == ()  # tiny: no drops
    search = plan_step(0, 190, 0, make_config("search"))
    assert (search.iterations, search.batch_size) == (8000, 8)
    assert search.lr_drops_unet == (2480, 4080) and search.lr_drops_transformer == (6400,)
    assert search.draws_per_epoch == 0  # not derived


@pytest.mark.parametrize(
    "preset, clips, mixtures",
    [
        ("paper", 24, 4_320_000),  # the default synthetic benchmark: 75 % of the paper's
        ("search", 24, 4 * 8000 * 8),
        ("small", 24, 4 * 300 * 8),
        ("tiny", 24, 4 * 60 * 8),
        ("search", None, 4 * 8000 * 8),  # fixed budgets do not depend on the dataset
    ],
)
def test_preset_shares_of_the_papers_compute(preset, clips, mixtures):
    counts = [clips] * 20 if clips else music21_train_counts()
    budget = sequence_budget(make_config(preset), counts)
    assert budget.mixtures == mixtures
    assert budget.share == pytest.approx(mixtures / 5_756_800)


def test_every_preset_has_a_budget_below_the_papers_except_paper():
    counts = music21_train_counts()
    shares = {p: sequence_budget(make_config(p), counts).share for p in PRESETS}
    assert shares["paper"] == 1.0 and all(s < 0.05 for p, s in shares.items() if p != "paper")
    assert shares["tiny"] < shares["small"] < shares["search"]


def test_memory_weight_and_joint_follow_the_sampler():
    cfg = make_config("paper")
    assert epoch_draws(10, 2, cfg.train, cfg.memory) == 40 * (10 + 20 * 2)
    assert epoch_draws(10, 2, cfg.train, make_config("paper", {"memory.oversample": 1}).memory) == 40 * 12
    shared = make_config("paper", {"memory.share": 0.5})
    assert epoch_draws(10, 2, shared.train, shared.memory) == 40 * 10 * 2  # new clips keep 40 draws each
    with pytest.raises(ConfigError, match="memory.share=1"):
        plan_step(1, 10, 2, make_config("paper", {"memory.share": 1.0}))
    # without memory there is nothing on top of the new clips
    no_memory = sequence_budget(make_config("paper", {"memory.per_class": 0}), music21_train_counts())
    assert [s.memory_clips for s in no_memory.steps] == [0, 0, 0, 0]
    assert no_memory.steps[1].iterations == 100 * (40 * 205 // 32)
    # joint trains on every seen class (the reference's upper bound): its exemplars are in the pool already
    joint = sequence_budget(make_config("paper", {"strategy.name": "joint"}), [10] * 20)
    assert [(s.new_clips, s.memory_clips) for s in joint.steps] == [(50, 0), (100, 0), (150, 0), (200, 0)]


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"train.lr_drop_epochs_unet": "31,x"}, "comma-separated whole epochs"),
        ({"train.lr_drop_epochs_transformer": "100"}, "not inside a step of train.epochs_per_step=100"),
        ({"train.epochs_per_step": 20}, "epoch 31 is not inside"),
        ({"train.iters_per_step": -1}, "train.iters_per_step must be >= 0"),
        ({"train.dup_trainset": 0}, "train.dup_trainset must be >= 1"),
    ],
)
def test_bad_budget_keys_are_refused(override, expected):
    with pytest.raises(ConfigError, match=expected):
        make_config("paper", override)


def test_an_epoch_shorter_than_a_batch_is_refused():
    with pytest.raises(ConfigError, match="less than train.batch_size=32"):
        iterations_per_step(31, make_config("paper").train)


@pytest.mark.slow
def test_engine_trains_the_derived_iterations(tmp_path):
    uri = f"file://{tmp_path}/ds"
    build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(4, 2, 2), seconds=1.6, seed=11))
    table = open_dataset(uri, cache_dir=tmp_path / "cache")
    # 2 epochs per step of 2 classes x 4 clips listed once (+ 1 exemplar per old class, weight 1), batch 4
    cfg = make_config(
        "tiny",
        {
            "data.classes_per_step": 2,
            "data.num_steps": 2,
            "train.iters_per_step": 0,
            "train.epochs_per_step": 2,
            "train.dup_trainset": 1,
            "train.batch_size": 4,
            "train.lr_drop_epochs_unet": "1",
            "memory.per_class": 1,
            "memory.oversample": 1,
            "strategy.name": "finetune",
        },
    )

    class Save:
        def report(self, result, save_checkpoint):
            save_checkpoint(tmp_path / f"step={result.step}")

    run_sequence(cfg, table, reporter=Save())
    expected = sequence_budget(cfg, [4] * 4)
    assert [s.iterations for s in expected.steps] == [4, 4]  # 8 // 4 x 2 and (8 + 2) // 4 x 2
    for step, plan in enumerate(expected.steps):
        unet, transformer = load_checkpoint(tmp_path / f"step={step}").schedulers
        assert unet["last_epoch"] == transformer["last_epoch"] == plan.iterations  # stepped once per iteration
        assert dict(unet["milestones"]) == {2: 1} and not transformer["milestones"]
