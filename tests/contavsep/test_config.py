"""Config: presets, strict loading with 'did you mean', dotted overrides, flat(), YAML overlay."""

import dataclasses

import pytest

from contavsep.config import (
    LEGACY_STRATEGY_DEFAULTS,
    PRESETS,
    Config,
    ConfigError,
    apply_overrides,
    flat,
    from_flat,
    make_config,
    parse_overrides,
    valid_keys,
)


def test_paper_defaults_match_the_paper():
    cfg = make_config("paper")
    assert (cfg.audio.sample_rate, cfg.audio.clip_samples, cfg.audio.n_fft, cfg.audio.hop) == (11025, 65535, 1022, 256)
    assert cfg.audio.warp_bins == 256
    s = cfg.strategy.params
    assert (s.lambda_ins, s.lambda_cls, s.lambda_dist, s.temperature) == (0.1, 0.3, 0.3, 0.05)
    assert s.crosssdc_form == "anchors"  # old features as CrossSDC keys only (docs/architecture.md section 4)
    assert cfg.memory.per_class == 1
    assert (cfg.data.num_steps, cfg.data.classes_per_step) == (4, 5)
    # the reference's budget: batch 32, 100 epochs of the 40x list per step, derived per step
    t = cfg.train
    assert (t.batch_size, t.iters_per_step, t.epochs_per_step, t.dup_trainset) == (32, 0, 100, 40)
    assert (t.lr_drop_epochs_unet, t.lr_drop_epochs_transformer, t.lr_decay_gamma) == ("31,51", "80", 0.1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_valid_and_frozen(preset):
    cfg = make_config(preset)
    assert cfg.preset == preset
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.seed = 3  # type: ignore[misc]


def test_dotted_overrides_are_typed_from_strings():
    cfg = make_config("tiny", parse_overrides(["strategy.lambda_ins=0.25", "memory.per_class=3", "train.amp=false"]))
    assert cfg.strategy.params.lambda_ins == 0.25 and isinstance(cfg.strategy.params.lambda_ins, float)
    assert cfg.memory.per_class == 3 and isinstance(cfg.memory.per_class, int)
    assert cfg.train.amp is False
    # the preset's own sizes survive overrides of other keys
    assert cfg.audio.warp_bins == PRESETS["tiny"]["audio.warp_bins"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"strategy.lamda_ins": 1}, "did you mean 'strategy.lambda_ins'"),
        ({"stratgy.name": "x"}, "did you mean 'strategy.name'"),
        ({"memory.per_clas": 2}, "did you mean 'memory.per_class'"),
    ],
)
def test_unknown_key_names_the_closest_valid_key(override, expected):
    with pytest.raises(ConfigError, match=expected):
        make_config("tiny", override)


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"strategy.lambda_ins": "abc"}, "strategy.lambda_ins: expected float"),
        ({"memory.per_class": 1.5}, "memory.per_class: expected int"),
        ({"train.amp": "maybe"}, "train.amp: expected bool"),
        ({"strategy": 3}, "is a section"),
        ({"strategy.name.x": 3}, "is a value, not a section"),
        ({"strategy.name": "contavsp"}, "did you mean 'contavsep'"),
        ({"model.name": "iqery"}, "did you mean 'iquery'"),
        ({"audio.hop": 2048}, "must not exceed audio.n_fft"),
        ({"model.unet_depth": 9}, "divisible by 2\\*\\*model.unet_depth"),
        ({"strategy.crosssdc_form": "rows"}, "strategy.crosssdc_form must be one of anchors, reference, got 'rows'"),
    ],
)
def test_wrong_values_are_refused_with_the_key(override, expected):
    with pytest.raises(ConfigError, match=expected):
        make_config("tiny", override)


def test_crosssdc_form_override():
    assert make_config("tiny", {"strategy.crosssdc_form": "reference"}).strategy.params.crosssdc_form == "reference"


def test_unknown_preset():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        make_config("tinny")


def test_flat_round_trip_and_vocabulary():
    cfg = make_config("small", {"strategy.name": "ewc", "strategy.lambda_ewc": 50})
    items = flat(cfg)
    assert list(items) == valid_keys(Config, strategy="ewc")
    assert items["strategy.lambda_ewc"] == 50.0 and items["preset"] == "small"
    assert from_flat(items) == cfg


def test_a_config_stored_before_strategies_declared_their_own_keys_reads_as_its_strategy():
    # Checkpoints and sweep records written before issue 21 hold every strategy's keys; the ones
    # the stored strategy does not have meant nothing to it and are dropped on reading.
    cfg = make_config("small", {"strategy.name": "lwf", "strategy.lambda_dist": 0.7})
    legacy = {**LEGACY_STRATEGY_DEFAULTS, **flat(cfg)}
    assert "strategy.lambda_ewc" in legacy and "strategy.lambda_ewc" not in flat(cfg)
    assert from_flat(legacy) == cfg
    assert from_flat({**legacy, "strategy.lambda_dist": 0.3}) != cfg  # its own keys still count


def test_yaml_overlay_nested_and_dotted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nstrategy:\n  name: lwf\n  lambda_dist: 0.7\nmemory.per_class: 0\n")
    cfg = make_config(yaml_path=path, overrides={"strategy.lambda_dist": 0.9})
    assert cfg.preset == "tiny" and cfg.strategy.name == "lwf"
    assert cfg.strategy.params.lambda_dist == 0.9  # --set wins over the YAML
    assert cfg.memory.per_class == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy:\n  lamda_dist: 1\n")
    with pytest.raises(ConfigError, match="strategy.lambda_dist"):
        make_config(yaml_path=bad)
    with pytest.raises(ConfigError, match="does not exist"):
        make_config(yaml_path=tmp_path / "missing.yaml")


def test_apply_overrides_keeps_preset_and_validates():
    cfg = make_config("tiny")
    out = apply_overrides(cfg, {"strategy.temperature": 0.1})
    assert out.strategy.params.temperature == 0.1 and out.audio == cfg.audio
    with pytest.raises(ConfigError, match="strategy.temperature must be > 0"):
        apply_overrides(cfg, {"strategy.temperature": 0})
    with pytest.raises(ConfigError, match="preset"):
        apply_overrides(cfg, {"preset": "paper"})


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["strategy.lambda_ins"])


def test_every_field_has_a_comment():
    import dataclasses as dc
    import inspect

    def check(cls, prefix=""):
        source = inspect.getsource(cls)
        for f in dc.fields(cls):
            lines = [ln for ln in source.splitlines() if ln.strip().startswith(f"{f.name}:")]
            assert len(lines) == 1 and "#" in lines[0], f"field {prefix}{f.name} has no comment"
            if dc.is_dataclass(f.default_factory if f.default_factory is not dc.MISSING else None):
                check(f.default_factory, f"{prefix}{f.name}.")

    check(Config)
