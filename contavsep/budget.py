"""Training budgets: how long each step trains, where its learning rates drop, what it costs.

The reference (ContAV-Sep's ``scripts/train.sh`` and ``main.py``, the schedule of iQuery) trains
every incremental step for ``num_epoch = 100`` epochs over a training list that holds the step's
new-class clips ``dup_trainset = 40`` times and every memory clip 40 x 20 times, in batches of
32 with ``drop_last``::

    iterations per epoch = floor(40 * (new clips + 20 * memory clips) / 32)
    iterations per step  = 100 * iterations per epoch

The U-Net's Adam learning rate drops 10x after epochs 31 and 51 (``lr_steps 30 50``, tested
after the 0-based epoch index), the transformer's AdamW rate after epoch 80 (``StepLR(80)``
stepped once per epoch). On the release's MUSIC-21 lists (840 training clips, 4 steps of 5
classes, 1 exemplar per old class) that is 23,700 / 38,100 / 55,500 / 62,600 iterations:
179,900 x 32 = 5,756,800 training mixtures per task sequence (:data:`PAPER_MIXTURES`).

Here ``train.iters_per_step = 0`` derives the count that way from the step's own training pool
(``train.epochs_per_step``, ``train.dup_trainset``; memory clips weigh ``memory.oversample``,
which is the reference's 20). A positive ``train.iters_per_step`` fixes the count instead; the
lr-drop epochs then count in units of ``iters_per_step / epochs_per_step`` iterations, so a
shortened run keeps the reference's schedule shape (drops at 31 %, 51 % and 80 % of a step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contavsep.config import Config, ConfigError, MemoryConfig, TrainConfig, drop_epochs

# The reference's iterations per step on the release's MUSIC-21 lists, and its batch size.
PAPER_STEP_ITERATIONS: tuple[int, ...] = (23_700, 38_100, 55_500, 62_600)
PAPER_BATCH_SIZE = 32
PAPER_MIXTURES = sum(PAPER_STEP_ITERATIONS) * PAPER_BATCH_SIZE  # 5,756,800 training mixtures per sequence


def epoch_draws(new_clips: int, memory_clips: int, train: TrainConfig, memory: MemoryConfig) -> int:
    """Training mixtures in one epoch: the length of the reference's duplicated training list.

    Every new clip is listed ``dup_trainset`` times, every memory clip ``dup_trainset x
    memory.oversample`` times (the reference: 40 x 20). With a fixed ``memory.share`` the epoch
    is as long as it takes to draw each new clip ``dup_trainset`` times on average.
    """
    if memory_clips and 0.0 <= memory.share <= 1.0:
        if memory.share == 1.0:
            raise ConfigError(
                "memory.share=1 never draws a new clip, so an epoch has no length: set train.iters_per_step"
            )
        return int(train.dup_trainset * new_clips / (1.0 - memory.share))
    return int(train.dup_trainset * (new_clips + memory.oversample * memory_clips))


def iterations_per_step(draws: int, train: TrainConfig) -> int:
    """Optimizer steps of one incremental step whose epoch is ``draws`` training mixtures.

    ``train.iters_per_step`` when positive; else ``epochs_per_step x floor(draws / batch_size)``
    (whole batches only, as the reference's ``drop_last`` loader).
    """
    if train.iters_per_step > 0:
        return train.iters_per_step
    per_epoch = draws // train.batch_size
    if per_epoch < 1:
        raise ConfigError(
            f"one epoch of this step is {draws} training mixtures, less than train.batch_size={train.batch_size}:"
            " raise train.dup_trainset, lower train.batch_size or set train.iters_per_step"
        )
    return train.epochs_per_step * per_epoch


@dataclass(frozen=True)
class StepPlan:
    """The training budget of one incremental step, in iterations."""

    step: int  # 0-based incremental step
    new_clips: int  # training clips of the classes the step trains on
    memory_clips: int  # exemplar clips drawn on top
    draws_per_epoch: int  # length of the reference's training list for this step (0: iterations fixed)
    iterations: int  # optimizer steps
    batch_size: int  # mixtures per optimizer step
    lr_drops_unet: tuple[int, ...]  # iteration counts after which the U-Net lr is multiplied by gamma
    lr_drops_transformer: tuple[int, ...]  # the same for the transformer / fusion part
    val_every: int  # iterations between validations when train.select=best_val

    @property
    def mixtures(self) -> int:
        return self.iterations * self.batch_size


def plan_step(step: int, new_clips: int, memory_clips: int, cfg: Config) -> StepPlan:
    """The budget of a step that trains on ``new_clips`` clips plus ``memory_clips`` exemplars."""
    t = cfg.train
    draws = epoch_draws(new_clips, memory_clips, t, cfg.memory) if t.iters_per_step == 0 else 0
    iterations = iterations_per_step(draws, t)

    def at(epoch: int) -> int:  # exact in derived mode, where iterations = epochs x iterations per epoch
        return epoch * iterations // t.epochs_per_step

    return StepPlan(
        step=step,
        new_clips=new_clips,
        memory_clips=memory_clips,
        draws_per_epoch=draws,
        iterations=iterations,
        batch_size=t.batch_size,
        lr_drops_unet=tuple(at(e) for e in drop_epochs(t.lr_drop_epochs_unet, "train.lr_drop_epochs_unet")),
        lr_drops_transformer=tuple(
            at(e) for e in drop_epochs(t.lr_drop_epochs_transformer, "train.lr_drop_epochs_transformer")
        ),
        val_every=t.val_every or max(1, at(1)),
    )


@dataclass(frozen=True)
class SequenceBudget:
    """The budget of a whole task sequence and its share of the paper's."""

    steps: tuple[StepPlan, ...]

    @property
    def iterations(self) -> int:
        return sum(s.iterations for s in self.steps)

    @property
    def mixtures(self) -> int:
        return sum(s.mixtures for s in self.steps)

    @property
    def share(self) -> float:
        """Training mixtures relative to the reference's on MUSIC-21 (:data:`PAPER_MIXTURES`)."""
        return self.mixtures / PAPER_MIXTURES


def sequence_budget(cfg: Config, train_clips_per_class: Sequence[int]) -> SequenceBudget:
    """What ``cfg`` trains on a dataset with ``train_clips_per_class[c]`` training clips of class id c.

    Follows the engine: the scenario's class order, the strategy's training classes (``joint``
    trains on all seen classes) and ``memory.per_class`` exemplars of every older class that the
    step does not train on anyway.
    """
    from contavsep.registry import STRATEGIES
    from contavsep.scenario import make_scenario

    counts = [int(n) for n in train_clips_per_class]
    scenario = make_scenario([f"class{c}" for c in range(len(counts))], cfg.data)
    strategy = STRATEGIES.get(cfg.strategy.name).from_config(cfg.strategy)
    per_class = cfg.memory.per_class
    steps = []
    for step in range(scenario.num_steps):
        train_ids = set(strategy.train_class_ids(step, scenario))
        old_ids = scenario.seen_class_ids(step - 1) if step > 0 and per_class > 0 else ()
        memory = sum(min(per_class, counts[c]) for c in old_ids if c not in train_ids)
        steps.append(plan_step(step, sum(counts[c] for c in train_ids), memory, cfg))
    return SequenceBudget(tuple(steps))


def describe(budget: SequenceBudget) -> str:
    """A per-step table and a total line (for ``contavsep config --budget`` and logs)."""
    rows = ["step  new clips  memory  draws/epoch  iterations  lr drops U-Net | transformer  mixtures"]
    for s in budget.steps:
        drops = f"{','.join(map(str, s.lr_drops_unet)) or '-'} | {','.join(map(str, s.lr_drops_transformer)) or '-'}"
        rows.append(
            f"{s.step + 1:4d}  {s.new_clips:9d}  {s.memory_clips:6d}  {s.draws_per_epoch or '-':>11}  {s.iterations:10d}"
            f"  {drops:>28s}  {s.mixtures:8d}"
        )
    rows.append(
        f"total: {budget.iterations} iterations, {budget.mixtures} training mixtures per sequence ="
        f" {100 * budget.share:.3g} % of the paper's {PAPER_MIXTURES} (ContAV-Sep on MUSIC-21)"
    )
    return "\n".join(rows)
