"""A strategy defined in this file runs through `contavsep run` and a search space's validation.

Adding a strategy is its own file plus one registry line (docs/development.md): this test's
`Toy` is that file, and `STRATEGIES.register` is the line. Its hooks record what the real
engine calls them with, so an engine that stopped calling a hook, or called them out of the
contract's order (contavsep/strategies/base.py), fails here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest

from contavsep.config import StrategyParams, bounded, flat, make_config
from contavsep.registry import STRATEGIES
from contavsep.strategies.base import StepContext, Strategy
from contavsep.testing import TINY_SEQUENCE
from contavsep_platform import cli
from contavsep_platform.spaces import SpaceError, parse_space

SETTINGS = TINY_SEQUENCE
ITERATIONS = SETTINGS["train.iters_per_step"]


@dataclasses.dataclass(frozen=True)
class ToyParams(StrategyParams):
    gain: float = bounded(0.5, at_least=0)  # weight of the toy penalty (the mean squared mask)
    passes: int = bounded(1, at_least=1)  # a second key, to show an int is typed from the CLI


class Toy(Strategy):
    """Penalises large masks; records every hook the engine calls, with its step."""

    name: ClassVar[str] = "toy"
    Params: ClassVar[type[StrategyParams]] = ToyParams
    first_step: ClassVar[str] = "never"
    calls: ClassVar[list[tuple[str, int]]] = []  # (hook, step), across the run's instances

    def before_task(self, ctx: StepContext) -> None:
        self.calls.append(("before_task", ctx.step))

    def transform_batch(self, batch: Any, ctx: StepContext) -> Any:
        self.calls.append(("transform_batch", ctx.step))
        return batch

    def loss_terms(self, batch: Any, out: Any, ctx: StepContext) -> dict[str, Any]:
        self.calls.append(("loss_terms", ctx.step))
        return {"toy": self.params.gain * out.masks.float().square().mean()}

    def after_backward(self, ctx: StepContext) -> None:
        self.calls.append(("after_backward", ctx.step))

    def after_task(self, ctx: StepContext) -> None:
        self.calls.append(("after_task", ctx.step))

    def state_dict(self) -> dict[str, Any]:
        return {"calls": len(self.calls)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        assert set(state) == {"calls"}


@pytest.fixture
def toy() -> Iterator[type[Toy]]:
    STRATEGIES.register("toy", f"{__name__}:Toy")
    Toy.calls.clear()
    try:
        yield Toy
    finally:
        STRATEGIES.unregister("toy")


def test_a_strategy_declared_in_one_file_runs_through_contavsep_run(toy, synth_dataset_factory, tmp_path, capsys):
    uri = synth_dataset_factory(classes=4, clips_per_class=(4, 2, 2), seconds=1.6, seed=11)
    args = [
        "run",
        "--data",
        uri,
        "--preset",
        "tiny",
        "--strategy",
        "toy",
        "--set",
        "strategy.gain=0.25",
        "--set",
        "strategy.passes=2",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--no-checkpoints",
    ]
    for key, value in {**SETTINGS, "data.cache_dir": str(tmp_path / "cache")}.items():
        args += ["--set", f"{key}={value}"]
    assert cli.main(args) == 0, capsys.readouterr().err

    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["complete"] and len(doc["steps"]) == 2
    # the run's config (what MLflow logs and checkpoints store) carries the toy's keys, no other strategy's
    assert {k: v for k, v in doc["config"].items() if k.startswith("strategy.")} == {
        "strategy.name": "toy",
        "strategy.gain": 0.25,
        "strategy.passes": 2,
    }
    # the engine logged the strategy's own loss term at every step
    assert all(step["loss/toy"] > 0 for step in doc["steps"])
    # the contract, as the real engine keeps it: hooks in order, once per iteration, every step
    per_iteration = ["transform_batch", "loss_terms", "after_backward"]
    expected = [(hook, step) for step in (0, 1) for hook in ["before_task", *per_iteration * ITERATIONS, "after_task"]]
    assert toy.calls == expected

    # a key of another strategy is refused in one line, naming whose key it is, before anything runs
    bad = [*args[:-2], "--out", str(tmp_path / "bad"), "--set", "strategy.lambda_ewc=3"]
    assert cli.main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "contavsep run: error: strategy 'toy' has no key 'strategy.lambda_ewc' (a key of ewc); its keys: strategy.gain,"
        " strategy.passes"
    ]
    assert not (tmp_path / "bad").exists()


SPACE = """
name: toy_space
base:
  preset: tiny
  data.uri: file:///tmp/nowhere
strategies:
  toy:
    strategy.gain: {loguniform: [0.01, 1.0]}
  lwf: {}
metric: sdr
mode: max
num_samples: 4
"""


def test_a_strategy_declared_in_one_file_is_searched_by_a_space(toy):
    space = parse_space(SPACE, source="toy.yaml")
    assert set(space.strategies) == {"toy", "lwf"}
    cfg = space.trial_config({"strategy.name": "toy", "strategy.gain": 0.3})
    assert (cfg.strategy.name, cfg.strategy.params) == ("toy", ToyParams(gain=0.3, passes=1))
    assert "strategy.gain" not in flat(space.trial_config({"strategy.name": "lwf"}))

    # the toy's ranges are checked where it declares them; another strategy's key is refused
    with pytest.raises(SpaceError, match=r"strategy.gain must be >= 0, got -1.0"):
        parse_space(SPACE.replace("{loguniform: [0.01, 1.0]}", "-1.0"), source="toy.yaml")
    with pytest.raises(
        SpaceError, match=r"strategy 'toy' has no key 'strategy.temperature' \(a key of avcil, contavsep\)"
    ):
        parse_space(SPACE.replace("strategy.gain", "strategy.temperature"), source="toy.yaml")


def test_a_registered_name_is_never_replaced(toy):
    with pytest.raises(KeyError, match="already registered"):
        STRATEGIES.register("toy", f"{__name__}:Toy")
    assert make_config("tiny", {"strategy.name": "toy"}).strategy.params == ToyParams()
