"""Shared first steps: which trials share step 0, and that sharing changes no result."""

import math

import pytest
import torch

from contavsep.config import make_config
from contavsep.data.format.reader import open_dataset
from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
from contavsep.engine import Engine, run_sequence
from contavsep.first_step import FirstStepStore, trial_key
from contavsep.registry import STRATEGIES
from contavsep.testing import TINY_SEQUENCE

SETTINGS = TINY_SEQUENCE
PLAIN = ("finetune", "lwf", "ewc", "plop", "ewf", "joint")
# what may differ between a run that reused step 0 and one that trained it
TIMING = ("time/", "throughput/", "first_step/")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("first-step")
    uri = f"file://{root}/ds"
    build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(4, 2, 2), seconds=1.6, seed=11))
    return open_dataset(uri, cache_dir=root / "cache")


def _cfg(**extra):
    few_fisher_batches = {"strategy.fisher_batches": 2} if extra.get("strategy.name") == "ewc" else {}
    return make_config("tiny", {**SETTINGS, **few_fisher_batches, **extra})


def _key(cfg, content_hash="abc", world_size=1):
    key = trial_key(cfg, content_hash, world_size)
    return None if key is None else key[0]


class Collect:
    def __init__(self):
        self.results = []

    def report(self, result, save_checkpoint):
        self.results.append(result)


def _science(result):
    return {k: v for k, v in result.metrics.items() if not k.startswith(TIMING)}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])), (k, a[k], b[k])


def test_the_step_zero_key_counts_what_step_zero_depends_on_and_nothing_else():
    base = _cfg(**{"strategy.name": "finetune"})
    key = _key(base)
    # memory is filled after step 0, evaluation happens after it, speed keys change no result,
    # and every plain strategy trains step 0 the same way whatever its hyperparameters
    for same in (
        {"memory.per_class": 0},
        {"memory.oversample": 5.0},
        {"eval.windows_per_clip": 1},
        {"eval.seed": 7},
        {"eval.backend": "fast"},
        {"train.prefetch_batches": 0},
        {"train.fused_optimizer": True},
        {"strategy.name": "ewc", "strategy.lambda_ewc": 5.0},
        {"strategy.name": "lwf"},
        {"strategy.name": "joint"},
        {"strategy.name": "plop"},
        {"strategy.name": "ewf"},
        {"data.uri": "file:///elsewhere"},
    ):
        assert _key(_cfg(**{"strategy.name": "finetune", **same})) == key, same
    for other in (
        {"train.seed": 1},
        {"train.lr_unet": 2e-4},
        {"model.name": "coseparation"},
        {"data.shuffle_classes": True},
        {"train.iters_per_step": 4},
        {"train.batch_size": 2},
        {"audio.mask_max": 4.0},
        {"train.amp": False},
        {"strategy.name": "contavsep"},
        {"strategy.name": "avcil"},
    ):
        assert _key(_cfg(**{"strategy.name": "finetune", **other})) != key, other
    assert _key(base, content_hash="def") != key
    # ContAV-Sep trains its own step 0 (CrossSDC): shared only with the same hyperparameters
    cav = _key(_cfg(**{"strategy.name": "contavsep"}))
    assert _key(_cfg(**{"strategy.name": "contavsep", "memory.per_class": 0})) == cav
    assert _key(_cfg(**{"strategy.name": "contavsep", "strategy.lambda_ins": 0.5})) != cav
    # validation picks step 0's model under best_val: then the validation seed counts
    best = {"strategy.name": "finetune", "train.select": "best_val"}
    assert _key(_cfg(**best)) != _key(_cfg(**best, **{"eval.seed": 7}))
    # no sharing: switched off, a dataset without a content hash, DDP
    assert _key(_cfg(**{"train.share_first_step": False})) is None
    assert _key(base, content_hash="") is None and _key(base, world_size=2) is None


@pytest.mark.slow
def test_every_plain_strategy_trains_the_same_step_zero(dataset):
    """The declaration `first_step = "plain"` is a claim: each such strategy's step 0, trained
    by the engine, leaves bit-identical weights and main loss (and its zero terms are zero)."""
    reference = None
    for name in PLAIN:
        engine = Engine(_cfg(**{"strategy.name": name}), dataset)
        result = engine.run_step(0)
        state = {k: v.clone() for k, v in engine.model.state_dict().items()}
        assert all(result.metrics[f"loss/{t}"] == 0.0 for t in STRATEGIES.get(name).first_step_zero_terms)
        if reference is None:
            reference = (state, result.metrics["loss/main"])
            continue
        assert result.metrics["loss/main"] == reference[1], name
        for k, v in state.items():
            assert torch.equal(v, reference[0][k]), (name, k)
    # and the check can fail: ContAV-Sep's step 0 (CrossSDC) is another training
    engine = Engine(_cfg(**{"strategy.name": "contavsep"}), dataset)
    engine.run_step(0)
    assert any(not torch.equal(v, reference[0][k]) for k, v in engine.model.state_dict().items())


@pytest.mark.slow
@pytest.mark.parametrize("producer,reuser", [("finetune", "ewc"), ("plop", "lwf"), ("contavsep", "contavsep")])
def test_a_trial_that_reused_step_zero_ends_with_the_metrics_of_one_that_trained_it(
    dataset, tmp_path, producer, reuser
):
    store = FirstStepStore(f"file://{tmp_path}/first-steps")
    first = Collect()
    run_sequence(_cfg(**{"strategy.name": producer}), dataset, reporter=first, first_steps=store)
    assert first.results[0].metrics["first_step/shared"] == 0.0
    assert len(list((tmp_path / "first-steps").glob("*.pt"))) == 1

    cfg = _cfg(**{"strategy.name": reuser, "memory.per_class": 0})  # memory does not matter to step 0
    reused, trained = Collect(), Collect()
    reused_engine = Engine(cfg, dataset, first_steps=store)
    reused_engine.run(reused)
    trained_engine = Engine(cfg, dataset)
    trained_engine.run(trained)
    assert reused.results[0].metrics["first_step/shared"] == 1.0
    assert (
        "first_step/shared" not in trained.results[0].metrics and reused.results[1].metrics["first_step/shared"] == 1.0
    )
    assert len(reused.results) == len(trained.results) == 2
    for a, b in zip(reused.results, trained.results):
        _same(_science(a), _science(b))
        assert a.summary == b.summary
    # weights and the strategy's state (EWC's Fisher is estimated from the sampler's draws after
    # step 0's iterations) are bit-identical
    for k, v in trained_engine.model.state_dict().items():
        assert torch.equal(v, reused_engine.model.state_dict()[k]), k
    for k, v in trained_engine.strategy.state_dict().items():
        assert repr(v) == repr(reused_engine.strategy.state_dict()[k]), k


@pytest.mark.slow
def test_a_cut_shared_state_is_ignored_and_the_first_to_publish_wins(dataset, tmp_path):
    store = FirstStepStore(f"file://{tmp_path}/first-steps")
    cfg = _cfg(**{"strategy.name": "finetune", "data.num_steps": 1})
    engine = Engine(cfg, dataset, first_steps=store)
    first = engine.run_step(0)
    (path,) = (tmp_path / "first-steps").glob("*.pt")
    published = path.read_bytes()
    # a trial that raced it and finished second keeps its own state to itself
    key = engine._first_step_key()[0]
    later = store.load(key)
    later.losses = {"main": 1.0, "total": 1.0}
    assert store.publish(later) is False and path.read_bytes() == published
    assert store.load(key).losses == first_losses(first)
    path.write_bytes(published[: len(published) // 2])  # an upload cut short
    assert store.load(key) is None
    # storage that refuses (here: the store's folder is a file) never fails a trial
    blocked = FirstStepStore(f"file://{tmp_path}/a-file/first-steps")
    (tmp_path / "a-file").write_text("not a folder")
    assert blocked.load(key) is None and blocked.publish(later) is False
    again = Engine(cfg, dataset, first_steps=store).run_step(0)
    assert again.metrics["first_step/shared"] == 0.0  # trained here, same result
    _same(_science(again), _science(first))


def first_losses(result):
    return {k.removeprefix("loss/"): v for k, v in result.metrics.items() if k in ("loss/main", "loss/total")}
