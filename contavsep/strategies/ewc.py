"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), optionally online
(Schwarz et al., "Progress & Compress", ICML 2018), for mask-based separation.

After each step, a diagonal Fisher information F is estimated from the separation loss on the
step's training data, and the parameters theta* are kept as the anchor. During later steps the
penalty

``L_ewc = lambda_ewc / 2 * sum_i F_i (theta_i - theta*_i)^2``

holds the parameters that mattered for earlier tasks near their values.

Adaptation to the separator:

- The separation loss (the weighted L1 mask loss, ``ctx.main_loss``) takes the place of the
  classification log-likelihood; F is the squared gradient of the loss of a batch, averaged over
  ``fisher_batches`` fresh training batches (an empirical Fisher per batch rather than per
  sample: the separator's loss is a mean over mixtures and the per-sample variant would cost one
  backward pass per mixture; the scale difference is absorbed by the searched ``lambda_ewc``).
- The Fisher passes run the bare model (``ctx.model``) in eval mode (BatchNorm running
  statistics, no dropout), so estimating F never moves the BatchNorm statistics of the model
  about to be evaluated; the model's gradients and train/eval mode are restored afterwards.
  Under DDP every rank estimates F on its own batches and the estimates are averaged.
- Class queries grow between steps: only the rows that existed when F was estimated are
  anchored; rows of classes added since are free (they have no Fisher yet).
- Online / accumulated: ``F <- ewc_decay * F_old + F_new`` (rows of F_old that did not exist are
  zero); ``ewc_decay = 1`` sums the Fisher of all steps, as one penalty per task does with a
  shared anchor.

Loss term ``ewc`` (already multiplied by ``lambda_ewc / 2``); a graph-attached zero at step 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from contavsep.config import StrategyParams, bounded
from contavsep.models.output import SeparatorOutput
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy


@dataclass(frozen=True)
class EWCParams(StrategyParams):
    lambda_ewc: float = bounded(1000.0, at_least=0)  # weight of the quadratic Fisher penalty
    ewc_decay: float = bounded(1.0, at_least=0)  # F <- ewc_decay * F_old + F_new (1.0 = accumulate over steps)
    fisher_batches: int = bounded(32, at_least=1)  # training batches of the step used to estimate F


class EWC(Strategy):
    """Diagonal-Fisher quadratic penalty towards the parameters of the previous steps.

    State: ``fisher`` and ``anchor``, each {parameter name: tensor}, empty before the first
    ``after_task``.
    """

    name: ClassVar[str] = "ewc"
    first_step: ClassVar[str] = "plain"  # the Fisher comes after the iterations (after_task)
    first_step_zero_terms: ClassVar[tuple[str, ...]] = ("ewc",)
    Params: ClassVar[type[StrategyParams]] = EWCParams

    def __init__(self, params: EWCParams):
        super().__init__(params)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum_i F_i (theta_i - theta*_i)^2`` over the anchored parameters (rows), unweighted."""
        total: torch.Tensor | None = None
        for name, param in model.named_parameters():
            fisher = self.fisher.get(name)
            if fisher is None:
                continue
            anchored = param[: fisher.shape[0]] if param.shape != fisher.shape else param
            if anchored.shape != fisher.shape:
                raise ValueError(f"parameter {name} has shape {tuple(param.shape)}, its Fisher {tuple(fisher.shape)}")
            anchor = self.anchor[name].to(param.device)
            term = (fisher.to(param.device) * (anchored - anchor).pow(2)).sum()
            total = term if total is None else total + term
        if total is None:
            raise ValueError(
                "EWC has a Fisher for none of the model's parameters (was the state loaded into another model?)"
            )
        return total

    def loss_terms(self, batch: StepBatch, out: SeparatorOutput, ctx: StepContext) -> dict[str, torch.Tensor]:
        if not self.fisher:
            return {"ewc": out.masks.sum() * 0.0}  # step 0: nothing anchored yet
        return {"ewc": 0.5 * self.params.lambda_ewc * self.penalty(ctx.model)}

    def estimate_fisher(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Mean over ``fisher_batches`` training batches of the squared gradient of the batch's
        separation loss, per parameter, with the model in eval mode."""
        model = ctx.model
        params = dict(model.named_parameters())
        saved_grads = {name: p.grad for name, p in params.items()}
        was_training = model.training
        fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items() if p.requires_grad}
        used = 0
        try:
            model.eval()
            for batch in ctx.sample_batches(self.params.fisher_batches):
                for p in params.values():
                    p.grad = None
                ctx.main_loss(ctx.forward(model, batch, False), batch).backward()
                for name, f in fisher.items():
                    grad = params[name].grad
                    if grad is not None:
                        f += grad.detach().float().pow(2)
                used += 1
        finally:
            model.train(was_training)
            for name, p in params.items():
                p.grad = saved_grads[name]
        if used == 0:
            raise ValueError("ctx.sample_batches gave no batch to estimate the Fisher from")
        fisher = {name: f / used for name, f in fisher.items()}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Each DDP rank drew its own batches: average, so every rank holds (and rank 0
            # checkpoints) the same Fisher and the penalty is the same on every rank.
            world = torch.distributed.get_world_size()
            for f in fisher.values():
                torch.distributed.all_reduce(f)
                f /= world
        return fisher

    def after_task(self, ctx: StepContext) -> None:
        new = self.estimate_fisher(ctx)
        decay = self.params.ewc_decay
        for name, f_new in new.items():
            f_old = self.fisher.get(name)
            if f_old is not None:
                # Rows added since (new class queries) have no old Fisher: they get F_new only.
                f_new[: f_old.shape[0]] += decay * f_old.to(f_new.device)
        self.fisher = new
        self.anchor = {name: p.detach().clone() for name, p in ctx.model.named_parameters() if name in new}

    def state_dict(self) -> dict[str, Any]:
        return {"fisher": dict(self.fisher), "anchor": dict(self.anchor)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if set(state) != {"fisher", "anchor"}:
            raise ValueError(f"ewc state must have the keys 'fisher' and 'anchor', got {sorted(state)}")
        fisher, anchor = dict(state["fisher"]), dict(state["anchor"])
        if set(fisher) != set(anchor):
            raise ValueError("ewc state: 'fisher' and 'anchor' name different parameters")
        self.fisher, self.anchor = fisher, anchor
