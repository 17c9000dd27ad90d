"""Continual-learning strategies: the hook contract on two tiny steps, and what makes each one.

Real tiny separators (random weights) on real spectra of harmonic test tones; the step context
is built by hand the way the engine builds it (forward, main loss, fresh batches, a deepcopy of
the model as the frozen old model between steps).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
from collections.abc import Iterator

import pytest
import torch

from contavsep.audio import SpectralFrontEnd, mix_sources
from contavsep.config import ConfigError, flat, make_config
from contavsep.data.sampling.mixtures import MixtureBatch
from contavsep.losses import (
    FeatureSet,
    attention_distillation,
    cross_sdc,
    mask_distillation_loss,
    weighted_l1_mask_loss,
)
from contavsep.models.build import build_model
from contavsep.registry import STRATEGIES
from contavsep.scenario import Scenario
from contavsep.step_batch import StepBatch
from contavsep.strategies.base import StepContext, Strategy, params_table
from contavsep.strategies.ewf import fuse_weights
from contavsep.strategies.subset import select_sources, with_labels

CFG = make_config("tiny")
SCENARIO = Scenario(
    class_names=tuple(f"class{i}" for i in range(6)), class_order=(0, 1, 2, 3, 4, 5), classes_per_step=2
)
FRONT_END = SpectralFrontEnd(CFG.audio)
STRATEGY_NAMES = STRATEGIES.names()


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on the 2 shared cores of CI, tiny convolutions run 10-20x faster
    without OpenMP threads competing with the other test processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tone(row: int, samples: int) -> torch.Tensor:
    """A harmonic tone whose pitch and timbre depend on the clip row, plus a little noise."""
    gen = torch.Generator().manual_seed(row)
    t = torch.arange(samples, dtype=torch.float32) / CFG.audio.sample_rate
    f0 = 110.0 * (1 + row % 7) * (1.0 + 0.05 * torch.rand((), generator=gen).item())
    wav = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 5))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * (0.5 + row % 3) * t)
    return 0.3 * wav * envelope + 0.01 * torch.randn(samples, generator=gen)


def make_batch(labels: list[list[int]], memory: list[list[bool]], rows: list[list[int]] | None = None) -> StepBatch:
    """A StepBatch of the given labels; a clip's waveform and visual features follow its row."""
    lab = torch.tensor(labels, dtype=torch.long)
    if rows is None:
        rows = [[10 * label + 1 for label in mixture] for mixture in labels]
    row_t = torch.tensor(rows, dtype=torch.long)
    b, n = lab.shape
    samples, m = CFG.audio.clip_samples, CFG.model
    wavs = torch.stack([torch.stack([tone(int(r), samples) for r in mixture]) for mixture in row_t])

    def visual(row: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(10_000 + row)
        return torch.randn(m.object_dim, generator=gen), torch.randn(m.motion_tokens, m.motion_dim, generator=gen)

    feats = [[visual(int(r)) for r in mixture] for mixture in row_t]
    mix, scaled = mix_sources(wavs)
    clips = MixtureBatch(
        source_wavs=wavs,
        labels=lab,
        class_ids=lab.clone(),  # the scenario's class order is the identity
        tasks=lab // SCENARIO.classes_per_step,
        rows=row_t,
        is_memory=torch.tensor(memory, dtype=torch.bool),
        object_features=torch.stack([torch.stack([o for o, _ in mixture]) for mixture in feats]),
        motion_features=torch.stack([torch.stack([mo for _, mo in mixture]) for mixture in feats]),
    )
    return StepBatch(clips=clips, spectra=FRONT_END.prepare(mix, scaled))


def scalar(value: torch.Tensor) -> float:
    """A scalar tensor's value, without autograd's warning about tensors that require grad."""
    return value.detach().item()


def forward(model: torch.nn.Module, batch: StepBatch, return_internals: bool):
    c = batch.clips
    return model(
        batch.spectra.mix_input, c.labels, c.object_features, c.motion_features, return_internals=return_internals
    )


def main_loss(out, batch: StepBatch) -> torch.Tensor:
    return weighted_l1_mask_loss(out.masks, batch.spectra.target_masks, batch.spectra.weight)


# Training batches per step: step 0 sees classes 0, 1; step 1 new classes 2, 3 plus memory clips.
STEP_BATCHES = {
    0: [([[0, 1], [1, 0]], [[False, False], [False, False]]), ([[1, 0], [0, 1]], [[False, False], [False, False]])],
    1: [([[2, 0], [3, 2]], [[False, True], [False, False]]), ([[1, 3], [2, 3]], [[True, False], [False, False]])],
}


def step_batch(step: int, index: int) -> StepBatch:
    labels, memory = STEP_BATCHES[step][index % len(STEP_BATCHES[step])]
    return make_batch(labels, memory)


def make_ctx(step: int, model, old_model, calls: list | None = None) -> StepContext:
    def sample_batches(count: int) -> Iterator[StepBatch]:
        return (step_batch(step, i) for i in range(count))

    def recorded_forward(m, batch, internals):
        if calls is not None:
            calls.append("old" if m is old_model else "model")
        return forward(m, batch, internals)

    return StepContext(
        step=step,
        scenario=SCENARIO,
        model=model,
        old_model=old_model,
        device=torch.device("cpu"),
        sample_batches=sample_batches,
        forward=recorded_forward,
        main_loss=main_loss,
    )


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    old = copy.deepcopy(model).eval()
    old.requires_grad_(False)
    return old


def tiny_model(num_classes: int = 2, name: str = "iquery", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = CFG if name == "iquery" else dataclasses.replace(CFG, model=dataclasses.replace(CFG.model, name=name))
    return build_model(cfg, num_classes)


def strategy(name: str, **overrides) -> Strategy:
    few_fisher_batches = {"fisher_batches": 2} if name == "ewc" else {}
    keys = {f"strategy.{k}": v for k, v in {**few_fisher_batches, **overrides}.items()}
    cfg = make_config("tiny", {"strategy.name": name, **keys})
    return STRATEGIES.get(name).from_config(cfg.strategy)


def equal_pair(name: str = "iquery", expand_to: int | None = None):
    """An old model (2 classes) and a current model with the same weights, both in eval mode.

    ``expand_to`` grows the current model's class queries. For iQuery that alone changes the
    old classes' masks (the queries attend to each other), so "same function" needs no growth.
    """
    old = frozen_copy(tiny_model(2, name))
    model = copy.deepcopy(old)
    model.requires_grad_(True)
    if expand_to is not None:
        model.expand_classes(expand_to)
    return model, old


# Memory clips next to old-class clips: sources both models can query with the same queries.
def old_class_batch() -> StepBatch:
    return make_batch([[0, 1], [1, 0]], [[True, False], [False, True]])


def new_class_batch() -> StepBatch:
    return make_batch([[2, 3], [3, 2]], [[False, False], [False, False]])


@torch.no_grad()
def perturb(param: torch.Tensor, scale: float = 0.05, seed: int = 1) -> None:
    param.add_(scale * torch.randn(param.shape, generator=torch.Generator().manual_seed(seed)))


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ------------------------------------------------------------------------------- the contract


class HookLog:
    """Wraps a strategy instance's hooks to record the order the loop calls them in."""

    def __init__(self, strat: Strategy):
        self.calls: list[str] = []
        for hook in ("before_task", "transform_batch", "loss_terms", "after_backward", "after_task"):
            original = getattr(strat, hook)

            def recorded(*args, _hook=hook, _original=original):
                self.calls.append(_hook)
                return _original(*args)

            setattr(strat, hook, recorded)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_two_tiny_steps_follow_the_contract(name):
    strat = strategy(name)
    log = HookLog(strat)
    model = tiny_model(SCENARIO.num_seen(0)).train()
    old_model = None
    term_names: set[str] | None = None
    for step in (0, 1):
        model.expand_classes(SCENARIO.num_seen(step))
        ctx = make_ctx(step, model, old_model)
        expected_classes = SCENARIO.seen_class_ids(step) if name == "joint" else SCENARIO.task_class_ids(step)
        assert tuple(strat.train_class_ids(step, SCENARIO)) == tuple(expected_classes)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        strat.before_task(ctx)
        iterations = 2
        for it in range(iterations):
            batch = strat.transform_batch(step_batch(step, it), ctx)
            out = ctx.forward(model, batch, strat.wants_internals(ctx))
            main = ctx.main_loss(out, batch)
            state = round_trip(strat.state_dict())
            terms = strat.loss_terms(batch, out, ctx)
            assert isinstance(terms, dict)
            for key, value in terms.items():
                assert isinstance(key, str) and key
                assert isinstance(value, torch.Tensor) and value.dim() == 0, key
                assert torch.isfinite(value), key
            # Names are stable over iterations and steps (each is a logged metric).
            term_names = set(terms) if term_names is None else term_names
            assert set(terms) == term_names
            if step == 1 and it == iterations - 1:
                # A fresh strategy loaded from the state gives the same loss on the same batch.
                fresh = type(strat)(strat.params)
                fresh.load_state_dict(state)
                again = fresh.loss_terms(batch, out, ctx)
                assert set(again) == set(terms)
                for key in terms:
                    torch.testing.assert_close(again[key], terms[key], rtol=0, atol=0)
            optimizer.zero_grad(set_to_none=True)
            (main + sum(terms.values(), torch.zeros(()))).backward()
            strat.after_backward(ctx)
            optimizer.step()
        strat.after_task(ctx)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        old_model = frozen_copy(model)
    expected_terms = {
        "finetune": set(),
        "joint": set(),
        "ewf": set(),
        "lwf": {"dist"},
        "ewc": {"ewc"},
        "plop": {"pod"},
        "avcil": {"ins", "cls", "att", "dist"},
        "contavsep": {"ins", "cls", "dist"},
    }[name]
    assert term_names == expected_terms
    per_step = ["before_task"] + ["transform_batch", "loss_terms", "after_backward"] * iterations + ["after_task"]
    assert log.calls == per_step * 2


def test_every_strategy_reads_its_own_keys_and_only_those():
    values = {
        "lambda_ins": 0.11,
        "lambda_cls": 0.22,
        "lambda_dist": 0.33,
        "temperature": 0.07,
        "lambda_att": 0.5,
        "lambda_ewc": 12.0,
        "ewc_decay": 0.9,
        "fisher_batches": 3,
        "lambda_pod": 0.02,
        "pod_scales": 2,
        "ewf_alpha": 0.25,
        "crosssdc_form": "reference",
    }
    every_key = {f.name for name in STRATEGY_NAMES for f in dataclasses.fields(STRATEGIES.get(name).Params)}
    assert every_key <= set(values), "give the new strategy's keys a test value here"
    for name in STRATEGY_NAMES:
        cls = STRATEGIES.get(name)
        assert cls.name == name
        own = [f.name for f in dataclasses.fields(cls.Params)]
        cfg = make_config("tiny", {"strategy.name": name, **{f"strategy.{k}": values[k] for k in own}})
        strat = cls.from_config(cfg.strategy)
        assert {k: getattr(strat.params, k) for k in own} == {k: values[k] for k in own}
        # flat() (what MLflow logs and checkpoints store) carries this strategy's keys alone
        assert sorted(k for k in flat(cfg) if k.startswith("strategy.")) == sorted(
            ["strategy.name", *(f"strategy.{k}" for k in own)]
        )
        # the defaults users see (`contavsep strategies`) are the Params' own
        assert params_table(cls) == [(f"strategy.{k}", getattr(cls.Params(), k)) for k in own]
        others = sorted(every_key - set(own))
        if others:
            with pytest.raises(ConfigError, match=f"strategy '{name}' has no key 'strategy.{others[0]}' \\(a key of "):
                make_config("tiny", {"strategy.name": name, f"strategy.{others[0]}": values[others[0]]})
    assert {f.name for f in dataclasses.fields(STRATEGIES.get("contavsep").Params)} == {
        "lambda_ins",
        "lambda_cls",
        "lambda_dist",
        "temperature",
        "crosssdc_form",
    }


# ----------------------------------------------------------------------- running on a subset


@pytest.mark.parametrize("name", ["iquery", "coseparation"])
def test_sources_run_alone_give_the_same_outputs_as_in_their_mixture(name):
    model = tiny_model(4, name).eval()
    batch = make_batch([[2, 0], [3, 1], [1, 2]], [[False, True], [False, True], [True, False]])
    flags = torch.tensor([[False, True], [True, True], [True, False]])
    with torch.no_grad():
        full = forward(model, batch, True)
        alone = forward(model, select_sources(batch, flags), True)
    assert alone.masks.shape == (4, 1, *full.masks.shape[2:])
    torch.testing.assert_close(alone.masks[:, 0], full.masks[flags], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone.audio_features[:, 0], full.audio_features[flags], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone.object_features[:, 0], full.object_features[flags], rtol=1e-5, atol=1e-5)
    if name == "iquery":
        torch.testing.assert_close(alone.attention[:, 0], full.attention[flags], rtol=1e-5, atol=1e-6)
    sub = select_sources(batch, flags)
    assert sub.clips.rows[:, 0].tolist() == batch.clips.rows[flags].tolist()
    torch.testing.assert_close(sub.spectra.target_masks[:, 0], batch.spectra.target_masks[flags])


# ------------------------------------------------------------------------- finetune and joint


def test_finetune_adds_nothing_and_joint_trains_on_all_seen_classes():
    model = tiny_model(4)
    batch = step_batch(1, 0)
    ctx = make_ctx(1, model, frozen_copy(model))
    out = forward(model, batch, False)
    for name in ("finetune", "joint"):
        assert strategy(name).loss_terms(batch, out, ctx) == {}
        assert strategy(name).state_dict() == {}
    for step in range(SCENARIO.num_steps):
        assert tuple(strategy("finetune").train_class_ids(step, SCENARIO)) == SCENARIO.task_class_ids(step)
        assert tuple(strategy("joint").train_class_ids(step, SCENARIO)) == SCENARIO.class_order[: 2 * (step + 1)]
    with pytest.raises(ValueError):
        strategy("finetune").load_state_dict({"unexpected": 1})


# ---------------------------------------------------------------------------------------- EWC


def reference_fisher(model: torch.nn.Module, step: int, count: int) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the batch loss, model in eval mode, written out independently."""
    model.eval()
    sums = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for i in range(count):
        model.zero_grad(set_to_none=True)
        batch = step_batch(step, i)
        main_loss(forward(model, batch, False), batch).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                sums[name] += p.grad.pow(2)
    model.zero_grad(set_to_none=True)
    model.train()
    return {name: s / count for name, s in sums.items()}


def test_ewc_fisher_penalty_and_online_decay():
    lam, decay = 10.0, 0.5
    ewc = strategy("ewc", lambda_ewc=lam, ewc_decay=decay)
    model = tiny_model(2).train()
    batch = step_batch(1, 0)
    model.unet_parameters()[0].grad = torch.full_like(model.unet_parameters()[0], 7.0)

    ctx0 = make_ctx(0, model, None)
    out = forward(model, step_batch(0, 0), False)
    zero = ewc.loss_terms(step_batch(0, 0), out, ctx0)["ewc"]
    assert scalar(zero) == 0.0 and zero.requires_grad  # nothing anchored at step 0
    expected_f1 = reference_fisher(copy.deepcopy(model), 0, 2)
    buffers_before = {k: v.clone() for k, v in model.named_buffers()}
    ewc.after_task(ctx0)
    # Estimating the Fisher leaves the model as it was: mode, BatchNorm statistics, gradients.
    assert model.training
    for key, value in model.named_buffers():
        torch.testing.assert_close(value, buffers_before[key], rtol=0, atol=0)
    assert scalar(model.unet_parameters()[0].grad.unique()) == 7.0
    model.unet_parameters()[0].grad = None
    for key, value in expected_f1.items():
        torch.testing.assert_close(ewc.fisher[key], value, rtol=1e-5, atol=1e-12)
    assert sum(scalar(f.sum()) for f in ewc.fisher.values()) > 0

    # At the anchor the penalty is exactly zero; new query rows are free.
    model.expand_classes(4)
    ctx1 = make_ctx(1, model, frozen_copy(model))
    out = forward(model, batch, False)
    assert scalar(ewc.loss_terms(batch, out, ctx1)["ewc"]) == 0.0
    perturb(model.class_queries[2:])
    assert scalar(ewc.loss_terms(batch, out, ctx1)["ewc"]) == 0.0
    # Away from it: lambda / 2 * sum F (theta - theta*)^2, old query rows included.
    weight = model.unet_parameters()[0]
    name = next(k for k, p in model.named_parameters() if p is weight)
    with torch.no_grad():
        weight.add_(0.01)
        model.class_queries[0].add_(0.02)
    penalty = ewc.loss_terms(batch, out, ctx1)["ewc"]
    expected = 0.5 * lam * ((ewc.fisher[name] * 0.01**2).sum() + (ewc.fisher["class_queries"][0] * 0.02**2).sum())
    assert scalar(penalty) > 0
    torch.testing.assert_close(penalty, expected, rtol=1e-4, atol=0)
    penalty.backward()
    assert model.class_queries.grad[2:].abs().sum() == 0 and model.class_queries.grad[0].abs().sum() > 0

    # Online EWC: F <- decay * F_old + F_new, the new query rows get F_new only.
    f_old = {k: v.clone() for k, v in ewc.fisher.items()}
    model.zero_grad(set_to_none=True)
    f_new = reference_fisher(copy.deepcopy(model), 1, 2)
    ewc.after_task(ctx1)
    assert ewc.fisher["class_queries"].shape == (4, CFG.model.d_model)
    torch.testing.assert_close(ewc.fisher[name], f_new[name] + decay * f_old[name], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(
        ewc.fisher["class_queries"][:2],
        f_new["class_queries"][:2] + decay * f_old["class_queries"],
        rtol=1e-5,
        atol=1e-12,
    )
    torch.testing.assert_close(ewc.fisher["class_queries"][2:], f_new["class_queries"][2:], rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(ewc.anchor[name], weight.detach(), rtol=0, atol=0)
    with pytest.raises(ValueError):
        ewc.load_state_dict({"fisher": {}})


# ---------------------------------------------------------------------------------------- EWF


def test_ewf_fuses_shared_weights_and_keeps_the_new_class_queries():
    alpha = 0.25
    old = frozen_copy(tiny_model(2))
    model = copy.deepcopy(old)
    model.requires_grad_(True)
    model.expand_classes(4)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            perturb(p, 0.5, seed=i)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.add_(1.0)
                module.num_batches_tracked.add_(5)
    before = copy.deepcopy(model)
    ewf = strategy("ewf", ewf_alpha=alpha)
    ewf.after_task(make_ctx(1, model, old))
    old_tensors = {**dict(old.named_parameters()), **dict(old.named_buffers())}
    new_tensors = {**dict(before.named_parameters()), **dict(before.named_buffers())}
    for name, fused in [*model.named_parameters(), *model.named_buffers()]:
        if name == "class_queries":
            torch.testing.assert_close(fused[:2], alpha * old_tensors[name] + (1 - alpha) * new_tensors[name][:2])
            torch.testing.assert_close(fused[2:], new_tensors[name][2:], rtol=0, atol=0)
        elif fused.is_floating_point():
            torch.testing.assert_close(fused, alpha * old_tensors[name] + (1 - alpha) * new_tensors[name])
        else:  # BatchNorm batch counters keep the new model's value
            assert torch.equal(fused, new_tensors[name])
    # Step 0: no old endpoint, nothing changes; a later step without one is an engine error.
    fresh = tiny_model(2)
    snapshot = copy.deepcopy(fresh.state_dict())
    ewf.after_task(make_ctx(0, fresh, None))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, snapshot[key])
    with pytest.raises(ValueError, match="old_model"):
        ewf.after_task(make_ctx(2, fresh, None))
    # Known tensors: alpha = 1 restores the old endpoint on shared weights.
    a, b = tiny_model(2, seed=3), tiny_model(2, seed=4)
    fuse_weights(b, a, 1.0)
    torch.testing.assert_close(b.unet_parameters()[0], a.unet_parameters()[0], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- LwF


def test_lwf_distils_every_source_and_queries_new_classes_with_old_heads():
    lwf = strategy("lwf", lambda_dist=2.0)
    model, old = equal_pair()
    ctx = make_ctx(1, model, old)
    lwf.before_task(ctx)
    batch = old_class_batch()
    dist = lwf.loss_terms(batch, forward(model, batch, False), ctx)["dist"]
    assert scalar(dist) == 0.0 and dist.requires_grad
    perturb(model.unet_parameters()[-1])
    dist = lwf.loss_terms(batch, forward(model, batch, False), ctx)["dist"]
    assert scalar(dist) > 0
    dist.backward()
    assert model.unet_parameters()[-1].grad.abs().sum() > 0

    # Without memory every source is of a new class: both models are asked with old queries.
    model.expand_classes(4)
    batch = new_class_batch()
    labels = batch.clips.labels
    state = lwf.state_dict()
    calls: list[str] = []
    dist = lwf.loss_terms(batch, forward(model, batch, False), make_ctx(1, model, old, calls))["dist"]
    assert calls == ["model", "old"]
    replay = type(lwf)(lwf.params)
    replay.load_state_dict(round_trip(state))
    queried = replay.old_queries(labels, labels < 2, 2)
    assert bool((queried < 2).all())
    with torch.no_grad():
        teacher = forward(old, with_labels(batch, queried), False).masks
    student = forward(model, with_labels(batch, queried), False).masks
    expected = 2.0 * mask_distillation_loss(
        student, teacher, batch.spectra.weight, torch.ones_like(labels, dtype=torch.bool)
    )
    torch.testing.assert_close(dist, expected, rtol=1e-5, atol=1e-8)
    assert scalar(dist) > 0
    model.zero_grad(set_to_none=True)
    dist.backward()
    assert model.unet_parameters()[-1].grad.abs().sum() > 0
    assert all(p.grad is None for p in old.parameters())

    # The draw: known sources keep their class, new ones get each old class, reproducibly.
    labels = torch.tensor([[2, 0], [3, 1]] * 50)
    known = labels < 2
    queried = lwf.old_queries(labels, known, 2)
    assert torch.equal(queried[known], labels[known])
    assert set(queried[~known].tolist()) == {0, 1}
    state = lwf.state_dict()
    first = lwf.old_queries(labels, known, 2)
    lwf.load_state_dict(round_trip(state))
    assert torch.equal(lwf.old_queries(labels, known, 2), first)
    lwf.before_task(ctx)
    again = lwf.old_queries(labels, known, 2)
    lwf.before_task(ctx)
    assert torch.equal(lwf.old_queries(labels, known, 2), again)
    # Step 0: nothing to distil, the term is still there.
    zero = lwf.loss_terms(batch, forward(model, batch, False), make_ctx(0, model, None))["dist"]
    assert scalar(zero) == 0.0 and zero.requires_grad


def test_lwf_on_coseparation_distils_all_sources_without_relabelling():
    model, old = equal_pair("coseparation", expand_to=4)
    calls: list[str] = []
    ctx = make_ctx(1, model, old, calls)
    lwf = strategy("lwf")
    lwf.before_task(ctx)
    batch = step_batch(1, 0)
    assert scalar(lwf.loss_terms(batch, forward(model, batch, False), ctx)["dist"]) == 0.0
    assert calls == ["old"]  # the current forward pass is reused: no relabelled student pass
    perturb(model.unet_parameters()[-1])
    assert scalar(lwf.loss_terms(batch, forward(model, batch, False), ctx)["dist"]) > 0


# ----------------------------------------------------------------------------------- ContAV-Sep


def features(out) -> FeatureSet:
    return FeatureSet(out.audio_features, out.object_features, out.motion_features)


def test_contavsep_crosssdc_anchors_and_memory_distillation():
    contav = strategy("contavsep")
    p = contav.params
    model, old = equal_pair()
    calls: list[str] = []
    ctx = make_ctx(1, model, old, calls)
    batch = old_class_batch()
    # Zero up to float rounding: the old model runs the memory sources as one-source mixtures.
    assert scalar(contav.loss_terms(batch, forward(model, batch, False), ctx)["dist"]) < 1e-7
    perturb(model.unet_parameters()[-1])
    assert scalar(contav.loss_terms(batch, forward(model, batch, False), ctx)["dist"]) > 1e-4

    # CrossSDC with the old model's features of the memory sources as anchors.
    model.expand_classes(4)
    batch = step_batch(1, 0)
    flags = batch.clips.is_memory
    out = forward(model, batch, False)
    calls.clear()
    terms = contav.loss_terms(batch, out, ctx)
    assert calls == ["old"]
    with torch.no_grad():
        old_full = forward(old, with_labels(batch, batch.clips.labels.clamp_max(1)), False)
    anchors = FeatureSet(
        old_full.audio_features[flags], old_full.object_features[flags], old_full.motion_features[flags]
    )
    ins, cls = cross_sdc(
        features(out),
        batch.clips.labels,
        batch.clips.rows,
        p.temperature,
        anchors=anchors,
        anchor_labels=batch.clips.labels[flags],
        anchor_clip_ids=batch.clips.rows[flags],
    )
    torch.testing.assert_close(terms["ins"], p.lambda_ins * ins, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["cls"], p.lambda_cls * cls, rtol=1e-5, atol=1e-6)
    plain_ins, _ = cross_sdc(features(out), batch.clips.labels, batch.clips.rows, p.temperature)
    assert not torch.allclose(plain_ins, ins)  # the anchors do enter the loss
    with torch.no_grad():
        expected_dist = mask_distillation_loss(out.masks, old_full.masks, batch.spectra.weight, flags)
    torch.testing.assert_close(terms["dist"], p.lambda_dist * expected_dist, rtol=1e-5, atol=1e-8)

    # Step 0 and batches without memory: CrossSDC on the current model alone, dist a zero on the graph.
    for batch_, ctx_ in ((new_class_batch(), ctx), (step_batch(0, 0), make_ctx(0, model, None, calls))):
        out_ = forward(model, batch_, False)
        calls.clear()
        terms_ = contav.loss_terms(batch_, out_, ctx_)
        assert calls == []  # the old model is not run when there is nothing to distil
        ins_, cls_ = cross_sdc(features(out_), batch_.clips.labels, batch_.clips.rows, p.temperature)
        torch.testing.assert_close(terms_["ins"], p.lambda_ins * ins_)
        torch.testing.assert_close(terms_["cls"], p.lambda_cls * cls_)
        assert scalar(terms_["dist"]) == 0.0 and terms_["dist"].requires_grad


def test_contavsep_crosssdc_form_comes_from_config():
    model, old = equal_pair(expand_to=4)
    perturb(model.unet_parameters()[-1])
    ctx = make_ctx(1, model, old)
    batch = step_batch(1, 0)
    flags = batch.clips.is_memory
    out = forward(model, batch, False)
    with torch.no_grad():
        old_out = forward(old, with_labels(batch, batch.clips.labels.clamp_max(1)), False)
    anchors = FeatureSet(old_out.audio_features[flags], old_out.object_features[flags], old_out.motion_features[flags])
    terms = {}
    for form in ("anchors", "reference"):
        contav = strategy("contavsep", crosssdc_form=form)
        assert contav.params.crosssdc_form == form
        p = contav.params
        terms[form] = contav.loss_terms(batch, out, ctx)
        ins, cls = cross_sdc(
            features(out),
            batch.clips.labels,
            batch.clips.rows,
            p.temperature,
            anchors=anchors,
            anchor_labels=batch.clips.labels[flags],
            anchor_clip_ids=batch.clips.rows[flags],
            form=form,
        )
        torch.testing.assert_close(terms[form]["ins"], p.lambda_ins * ins, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(terms[form]["cls"], p.lambda_cls * cls, rtol=1e-5, atol=1e-6)
    assert abs(scalar(terms["anchors"]["ins"]) - scalar(terms["reference"]["ins"])) > 1e-5
    torch.testing.assert_close(terms["anchors"]["dist"], terms["reference"]["dist"])  # only CrossSDC changes
    assert strategy("contavsep").params.crosssdc_form == "anchors"  # the documented default
    with pytest.raises(ValueError, match="strategy.crosssdc_form must be one of anchors, reference"):
        STRATEGIES.get("contavsep")(STRATEGIES.get("contavsep").Params(crosssdc_form="rows"))


def test_contavsep_anchors_receive_no_gradient():
    model, old = equal_pair(expand_to=4)
    old.requires_grad_(True)  # even a teacher that could take gradients must not get any
    perturb(model.unet_parameters()[-1])
    batch = step_batch(1, 1)
    ctx = make_ctx(1, model, old)
    out = forward(model, batch, False)
    terms = strategy("contavsep").loss_terms(batch, out, ctx)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in old.parameters())
    assert model.object_proj.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------- AV-CIL


def test_avcil_distils_attention_and_masks_on_memory_and_contrasts_without_anchors():
    avcil = strategy("avcil", lambda_att=2.0)
    p = avcil.params
    model, old = equal_pair()
    batch = old_class_batch()
    ctx = make_ctx(1, model, old)
    out = forward(model, batch, True)
    terms = avcil.loss_terms(batch, out, ctx)
    # Zero up to float rounding: the old model runs the memory sources as one-source mixtures.
    assert scalar(terms["dist"]) < 1e-7
    assert abs(scalar(terms["att"])) < 1e-6
    ins, cls = cross_sdc(features(out), batch.clips.labels, batch.clips.rows, p.temperature)
    torch.testing.assert_close(terms["ins"], p.lambda_ins * ins)
    torch.testing.assert_close(terms["cls"], p.lambda_cls * cls)

    perturb(model.transformer.audio_layers[-1].audio_attn.q_proj.weight, 0.5)
    out = forward(model, batch, True)
    terms = avcil.loss_terms(batch, out, ctx)
    assert scalar(terms["att"]) > 1e-4 and scalar(terms["dist"]) > 1e-4
    flags = batch.clips.is_memory
    with torch.no_grad():
        old_full = forward(old, batch, True)
    torch.testing.assert_close(
        terms["att"], 2.0 * attention_distillation(out.attention, old_full.attention, flags), rtol=1e-5, atol=1e-8
    )
    sum(terms.values()).backward()
    assert model.transformer.audio_layers[-1].audio_attn.q_proj.weight.grad.abs().sum() > 0

    model.expand_classes(4)
    batch = new_class_batch()
    terms = avcil.loss_terms(batch, forward(model, batch, True), ctx)
    for key in ("att", "dist"):
        assert scalar(terms[key]) == 0.0 and terms[key].requires_grad


def test_avcil_on_a_separator_without_attention_keeps_a_zero_attention_term():
    model, old = equal_pair("coseparation", expand_to=4)
    perturb(model.unet_parameters()[-1])
    batch = step_batch(1, 0)
    terms = strategy("avcil").loss_terms(batch, forward(model, batch, True), make_ctx(1, model, old))
    assert scalar(terms["att"]) == 0.0 and terms["att"].requires_grad
    assert scalar(terms["dist"]) > 0


# ----------------------------------------------------------------------------------------- PLOP


def test_plop_pod_is_zero_for_identical_models_and_grows_with_the_difference():
    plop = strategy("plop", lambda_pod=1.0)
    model, old = equal_pair(expand_to=4)  # the U-Net maps do not depend on the queries
    batch = step_batch(1, 0)  # holds new-class sources the old model has no query for
    ctx = make_ctx(1, model, old)
    pod = plop.loss_terms(batch, forward(model, batch, True), ctx)["pod"]
    assert scalar(pod) == 0.0
    perturb(model.unet_parameters()[1], 0.01)
    small = scalar(plop.loss_terms(batch, forward(model, batch, True), ctx)["pod"])
    perturb(model.unet_parameters()[1], 0.2, seed=2)
    large = plop.loss_terms(batch, forward(model, batch, True), ctx)["pod"]
    assert 0 < small < scalar(large)
    large.backward()
    assert model.unet_parameters()[1].grad.abs().sum() > 0
    step0 = plop.loss_terms(batch, forward(model, batch, True), make_ctx(0, model, None))["pod"]
    assert scalar(step0) == 0.0 and step0.requires_grad
    with pytest.raises(ValueError, match="return_internals"):
        plop.loss_terms(batch, forward(model, batch, False), ctx)
