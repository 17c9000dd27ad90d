"""train.channels_last / fused_optimizer / compile: "auto" is the measured choice per device."""

from __future__ import annotations

import pytest
import torch

from contavsep.config import ConfigError, make_config
from contavsep.speed import SpeedOptions, resolve_speed

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(
    "device, world_size, expected",
    [
        (CPU, 1, SpeedOptions(False, False, "off")),  # CPU results stay what the tests and the README pin
        (CPU, 2, SpeedOptions(False, False, "off")),
        (CUDA, 1, SpeedOptions(True, True, "reduce-overhead")),  # the measured best on one GPU
        (CUDA, 4, SpeedOptions(True, True, "off")),  # compiled DDP: never measured on a GPU
    ],
)
def test_auto_resolves_to_the_measured_choice_for_the_device(device, world_size, expected):
    t = make_config("tiny").train
    assert (t.channels_last, t.fused_optimizer, t.compile) == ("auto", "auto", "auto")  # the defaults
    assert resolve_speed(t.channels_last, t.fused_optimizer, t.compile, device, world_size) == expected


def test_explicit_values_win_on_every_device():
    for device in (CPU, CUDA):
        assert resolve_speed("false", "false", "off", device) == SpeedOptions(False, False, "off")
        assert resolve_speed("true", "true", "default", device) == SpeedOptions(True, True, "default")
        assert resolve_speed("true", "false", "auto", device, 4).compile == "off"
    assert (
        SpeedOptions(True, True, "reduce-overhead").describe() == "channels_last, fused Adam, compile=reduce-overhead"
    )
    assert SpeedOptions(False, False, "off").describe() == "compile=off"


def test_booleans_from_yaml_or_the_command_line_are_accepted():
    for value, expected in ((True, "true"), (False, "false"), ("true", "true"), ("auto", "auto")):
        cfg = make_config("tiny", {"train.channels_last": value, "train.fused_optimizer": value})
        assert (cfg.train.channels_last, cfg.train.fused_optimizer) == (expected, expected)


@pytest.mark.parametrize(
    "key, value",
    [("train.channels_last", "yes please"), ("train.fused_optimizer", "1"), ("train.compile", "fast")],
)
def test_bad_values_name_the_key_and_the_choices(key, value):
    with pytest.raises(ConfigError) as err:
        make_config("tiny", {key: value})
    message = str(err.value)
    assert "\n" not in message and key in message and "auto" in message and value in message


def test_an_engine_on_the_cpu_runs_its_defaults_uncompiled_in_the_default_layout(tmp_path):
    from contavsep.data.format.reader import open_dataset
    from contavsep.data.synthetic.synth import SynthConfig, build_synthetic
    from contavsep.engine import Engine

    uri = f"file://{tmp_path}/synth"
    build_synthetic(uri, SynthConfig(classes=4, clips_per_class=(2, 1, 1), seconds=1.6, seed=1), workers=1)
    cfg = make_config("tiny", {"data.num_steps": 2, "data.classes_per_step": 2, "train.device": "cpu"})
    engine = Engine(cfg, open_dataset(uri, cache_dir=tmp_path / "cache"))
    assert engine.speed == SpeedOptions(False, False, "off")
    assert engine.train_forward == engine.forward  # not compiled
    conv = next(m for m in engine.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous()  # not channels_last
    explicit = Engine(
        make_config(
            "tiny",
            {"data.num_steps": 2, "data.classes_per_step": 2, "train.device": "cpu", "train.channels_last": "true"},
        ),
        engine.table,
    )
    conv = next(m for m in explicit.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def test_a_retired_key_is_refused_with_why_but_old_stored_configs_still_load():
    from contavsep.config import flat, from_flat

    with pytest.raises(ConfigError) as err:
        make_config("tiny", {"train.num_workers": 4})
    assert "train.num_workers" in str(err.value) and "removed" in str(err.value) and "\n" not in str(err.value)
    # a step checkpoint written before: its flat config holds the key and the old bool switches
    old = {
        **flat(make_config("tiny")),
        "train.num_workers": 0,
        "train.channels_last": False,
        "train.fused_optimizer": True,
    }
    cfg = from_flat(old)
    assert (cfg.train.channels_last, cfg.train.fused_optimizer, cfg.train.compile) == ("false", "true", "auto")
