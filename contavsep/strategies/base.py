"""The strategy contract: small plugins with optional hooks, called by the engine.

The engine owns the loop (sampling, forward, backward, ``optimizer.step()``); a strategy only
adds loss terms and reacts at task boundaries, avalanche-style. Every hook has a no-op default,
so a strategy overrides just what makes it that strategy.

Order of calls in one incremental step ``t`` (see ``contavsep.engine``)::

    before_task(ctx)                     # snapshots, anchors
    for each iteration:
        batch = transform_batch(batch, ctx)
        out = ctx.forward(model, batch, wants_internals(ctx))
        terms = loss_terms(batch, out, ctx)  # named, already weighted, each logged
        # a strategy that distils runs ctx.old_model itself (no_grad) on the sources it needs:
        # only it knows which sources the old model can query (it lacks the new class queries)
        (main + sum(terms)).backward(); after_backward(ctx); optimizer.step()
    after_task(ctx)                      # Fisher, weight fusion
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from contavsep.config import StrategyConfig, StrategyParams
from contavsep.scenario import Scenario

if TYPE_CHECKING:  # annotations only: the contract itself needs no torch (a strategy's module may)
    import torch
    from torch import nn

    from contavsep.models.separator import Separator


@dataclass
class StepContext:
    """What a hook may look at during incremental step ``step``."""

    step: int
    scenario: Scenario
    model: Separator
    old_model: Separator | None  # frozen copy of the model after the previous step (eval, no grad); None at step 0
    device: torch.device
    # Fresh training batches (StepBatch, on the device) of the current step, e.g. for Fisher estimation.
    sample_batches: Callable[[int], Iterator[Any]]
    # forward(model, batch, return_internals) -> SeparatorOutput, as the engine calls the model.
    forward: Callable[[nn.Module, Any, bool], Any]
    # The main separation loss (weighted L1 of masks) of an output on its batch, with a graph.
    main_loss: Callable[[Any, Any], torch.Tensor]


@dataclass(frozen=True)
class NoParams(StrategyParams):
    """A strategy without hyperparameters of its own."""


class Strategy:
    """Base class: every hook is a no-op. Subclasses set ``name``, ``Params`` and overrides.

    ``Params`` is a frozen dataclass deriving from :class:`contavsep.config.StrategyParams`: its
    fields are the strategy's ``strategy.*`` keys, with their defaults, types and ranges
    (:func:`contavsep.config.bounded`, :func:`contavsep.config.one_of`), and nowhere else."""

    name: ClassVar[str] = "base"
    Params: ClassVar[type[StrategyParams]] = NoParams
    # Ask the model(s) for attention maps and U-Net feature maps (return_internals=True).
    needs_internals: ClassVar[bool] = False
    # What step 0 (no old model, no memory) is for this strategy, for shared first steps
    # (contavsep/first_step.py): "plain" = plain supervised training, the same for every plain
    # strategy (no step-0 loss term except the identically zero ones in first_step_zero_terms,
    # batches, gradients and its own state untouched by the iterations); "own" = its own step 0,
    # shared only with the same strategy and hyperparameters; "never" = not shared.
    first_step: ClassVar[str] = "own"
    # Loss terms this strategy logs at step 0 that are identically zero (kept named in the logs).
    first_step_zero_terms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any):
        self.params = params

    @classmethod
    def from_config(cls, cfg: StrategyConfig) -> Strategy:
        """The strategy of a config's ``strategy`` section (which holds this strategy's Params)."""
        if cfg.name != cls.name or not isinstance(cfg.params, cls.Params):
            raise ValueError(f"strategy {cls.name} cannot be built from the config of strategy '{cfg.name}'")
        return cls(cfg.params)

    # -- hooks -------------------------------------------------------------------------------
    def train_class_ids(self, step: int, scenario: Scenario) -> Sequence[int]:
        """Dataset class ids whose training data step ``step`` draws from (memory comes on top)."""
        return scenario.task_class_ids(step)

    def wants_internals(self, ctx: StepContext) -> bool:
        """Whether this step's training forward returns internals (default: ``needs_internals``)."""
        return self.needs_internals

    def before_task(self, ctx: StepContext) -> None:
        """Called once the model has queries for all seen classes, before the first iteration."""

    def transform_batch(self, batch: Any, ctx: StepContext) -> Any:
        """Rehearsal hook: may modify a training batch before the forward pass."""
        return batch

    def loss_terms(self, batch: Any, out: Any, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Extra loss terms, already weighted, by name (each is logged; the engine sums them)."""
        return {}

    def after_backward(self, ctx: StepContext) -> None:
        """Called after ``backward()`` and before the optimizer step (e.g. gradient surgery)."""

    def after_task(self, ctx: StepContext) -> None:
        """Called after the last iteration of a step, before evaluation (Fisher, weight fusion)."""

    # -- resumable state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"strategy '{self.name}' has no state but got keys {sorted(state)}")


def params_table(cls: type[Strategy]) -> list[tuple[str, Any]]:
    """(dotted key, default) of a strategy's hyperparameters, for `contavsep strategies`."""
    defaults = cls.Params()
    return [(f"strategy.{f.name}", getattr(defaults, f.name)) for f in dataclasses.fields(cls.Params)]
