"""Configuration: frozen dataclasses, strict loading, dotted keys as the one vocabulary.

A :class:`Config` is built from a size and budget preset (``paper``, ``search``, ``small``,
``tiny``), then an optional YAML overlay, then dotted overrides (``strategy.lambda_ins=0.2``).
The same dotted keys are used by the CLI (``--set k=v``), search spaces, Ray Tune and MLflow
params (:func:`flat`).

Loading is strict: an unknown key or a value of the wrong type raises :class:`ConfigError` with
the closest valid key, so a typo in a sweep fails before any trial starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contavsep.errors import ContavsepError
from contavsep.suggest import did_you_mean


class ConfigError(ContavsepError, ValueError):
    """A configuration key or value is invalid; the message says what to change."""


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 11025  # Hz; the paper (Sound-of-Pixels protocol) resamples all audio to 11025
    clip_samples: int = 65535  # samples per training/test crop (~6 s at 11025 Hz)
    n_fft: int = 1022  # STFT size -> n_fft // 2 + 1 = 512 frequency bins
    hop: int = 256  # STFT hop -> 1 + 65535 // 256 = 256 frames
    warp_bins: int = 256  # log-frequency bins of the network grid (Sound-of-Pixels warp); 0 = no warp
    mask_max: float = 5.0  # ratio-mask targets |X_n| / |X_mix| are clamped to [0, mask_max]
    weight_min: float = 1e-3  # loss weight clamp(log1p(|X_mix|), weight_min, weight_max)
    weight_max: float = 10.0  # upper clamp of the loss weight


@dataclass(frozen=True)
class ModelConfig:
    name: str = "iquery"  # separator: iquery (paper base) | coseparation
    unet_channels: int = 64  # width of the first U-Net conv (ngf); doubles per level up to 8x
    unet_depth: int = 7  # number of stride-2 down-convs; the grid must be divisible by 2**depth
    mask_channels: int = 32  # channels of the U-Net mask features (and of the mask embedding)
    d_model: int = 256  # transformer width (iquery) / fusion width (coseparation)
    n_heads: int = 8  # attention heads
    ffn_dim: int = 1024  # transformer feed-forward width
    encoder_layers: int = 1  # self-attention layers over the audio latent tokens
    decoder_layers: int = 4  # first attends to motion only; the rest do self + audio cross-attention
    dropout: float = 0.0  # transformer dropout (reference training script: MASK_FORMER_DROPOUT 0)
    object_dim: int = 512  # object (CLIP ViT-B/32 image) feature size
    motion_tokens: int = 8  # temporal tokens of the motion (VideoMAE) feature
    motion_dim: int = 768  # motion (VideoMAE base) feature size
    feature_dim: int = 256  # size of the CrossSDC features (audio, object, motion)
    weights: str = ""  # optional path/URI of pretrained separator weights ("" = random init)


@dataclass(frozen=True)
class TrainConfig:
    # The budget (contavsep/budget.py): 0 derives each step's iterations as the reference does,
    # epochs_per_step x floor(dup_trainset x (new clips + memory.oversample x memory clips) / batch_size).
    iters_per_step: int = 0  # optimizer steps per incremental step; 0 = derive from the step's training list
    epochs_per_step: int = 100  # reference num_epoch; with iters_per_step > 0 only the unit of the lr drops
    dup_trainset: int = 40  # reference: an epoch lists every new clip 40x (every memory clip 40 x memory.oversample)
    batch_size: int = 32  # mixtures per optimizer step (global, split across DDP ranks)
    lr_unet: float = 1e-4  # Adam learning rate of the U-Net
    lr_transformer: float = 1e-4  # AdamW learning rate of the transformer / fusion part
    weight_decay: float = 1e-4  # AdamW weight decay of the transformer part
    lr_drop_epochs_unet: str = "31,51"  # epochs after which the U-Net lr drops (reference lr_steps 30 50: 0-based indices)
    lr_drop_epochs_transformer: str = "80"  # epochs after which the transformer lr drops (reference StepLR(80))
    lr_decay_gamma: float = 0.1  # multiplicative factor of each lr drop
    grad_clip: float = 0.0  # max gradient norm; 0 = no clipping
    select: str = "last"  # last | best_val (reference code; peeks at old-class val data: leaks)
    val_every: int = 0  # iterations between validations when select=best_val; 0 = once per epoch (reference)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA (always fp32 on CPU)
    seed: int = 0  # seed of model init, sampling and training
    # Speed only (results do not depend on them, except compile/channels_last/fused within float rounding):
    prefetch_batches: int = 2  # batches prepared ahead on a background thread (pinned, copied on a side stream on CUDA); 0 = on the training thread
    # auto = the measured choice for the device (contavsep/speed.py): all on with CUDA graphs on one GPU, all off on a CPU
    channels_last: str = "auto"  # auto | true | false: U-Net convolutions in channels-last memory format (tensor cores on CUDA)
    compile: str = "auto"  # auto | off | default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs: torch.compile of the training forward
    fused_optimizer: str = "auto"  # auto | true | false: fused Adam/AdamW kernels (one launch per parameter group)
    share_first_step: bool = True  # reuse a sweep's step 0 trained by a trial with the same step-0 keys (contavsep/first_step.py)
    decoder_conv: str = "transposed"  # U-Net decoder "2x nearest upsample + 3x3 conv" as one stride-2 transposed conv (2.25x fewer FLOPs) | subpixel (the same taps as a stride-1 conv + depth-to-space) | upsample (literally)
    encoder_conv: str = "strided"  # U-Net encoder 4x4 stride-2 convs as written | space_to_depth (a stride-1 2x2 conv over 2x2 blocks, same FLOPs)


# train.* keys that change speed, not results (TrainConfig's "Speed only" block): left out of a
# shared first step's key and of what a sweep's --resume must keep equal.
SPEED_KEYS = ("train.prefetch_batches", "train.channels_last", "train.compile", "train.fused_optimizer",
              "train.decoder_conv", "train.encoder_conv", "train.share_first_step")

# train.compile: "auto" (contavsep/speed.py), "off" or a torch.compile mode.
# Allowed values of the speed and layout switches. They live with the schema, not with the torch
# modules that act on them, so that validating a config never imports torch.
SWITCH_VALUES = ("auto", "true", "false")  # train.channels_last, train.fused_optimizer
ENCODER_CONVS = ("strided", "space_to_depth")  # train.encoder_conv (contavsep.models.unet)
DECODER_CONVS = ("transposed", "subpixel", "upsample")  # train.decoder_conv (contavsep.models.unet)
COMPILE_MODES = ("auto", "off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# the modes whose compiled forward and backward replay as CUDA graphs (on CUDA devices)
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class StrategyConfig:
    """``strategy.name`` selects the strategy; every other ``strategy.*`` key is a field of that
    strategy's own ``Params`` (in ``contavsep/strategies/<name>.py``, the one place a strategy's
    hyperparameters, defaults and ranges are declared). ``flat()`` writes them inline
    (``strategy.lambda_ins``), so dotted keys stay as they were."""

    name: str = "contavsep"  # finetune | lwf | ewc | plop | ewf | avcil | contavsep | joint (contavsep strategies)
    params: Any = field(default=None, metadata={"inline": True})  # its Params; make_config fills it in


# The keys StrategyConfig held before each strategy declared its own (issue 21), with the values
# they had: configs stored then (checkpoints, sweep fingerprints) carry all of them, whatever the
# strategy; the ones the stored strategy does not have are dropped when such a config is read.
LEGACY_STRATEGY_DEFAULTS: dict[str, Any] = {
    "strategy.lambda_ins": 0.1, "strategy.lambda_cls": 0.3, "strategy.lambda_dist": 0.3, "strategy.temperature": 0.05,
    "strategy.crosssdc_form": "anchors", "strategy.lambda_att": 1.0, "strategy.lambda_ewc": 1000.0,
    "strategy.ewc_decay": 1.0, "strategy.fisher_batches": 32, "strategy.lambda_pod": 0.01, "strategy.pod_scales": 3,
    "strategy.ewf_alpha": 0.5,
}


def bounded(default: Any, *, above: float | None = None, at_least: float | None = None,
            at_most: float | None = None) -> Any:
    """A hyperparameter field (of a strategy's ``Params``) with its valid range, checked whenever
    a config is built: ``above`` is a strict lower limit, ``at_least``/``at_most`` inclusive ones."""
    return field(default=default, metadata={"above": above, "at_least": at_least, "at_most": at_most})


def one_of(default: str, choices: tuple[str, ...]) -> Any:
    """A hyperparameter field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": choices})


@dataclass(frozen=True)
class StrategyParams:
    """Base of every strategy's ``Params``: the ranges and choices its fields declare with
    :func:`bounded` and :func:`one_of` are checked whenever one is built (a config, a test, a
    resumed checkpoint), so a strategy's rules live in its own file and nowhere else."""

    def __post_init__(self) -> None:
        _check_declared(self, "strategy.")


def strategy_params(name: str) -> type[StrategyParams]:
    """The ``Params`` class of strategy ``name`` (imports that strategy's module; a
    :class:`ConfigError` with the closest name for an unknown one)."""
    from contavsep.registry import STRATEGIES, RegistryError

    try:
        return typing.cast(type[StrategyParams], STRATEGIES.get(name).Params)
    except RegistryError as exc:
        raise ConfigError(f"strategy.name: {exc}") from None


@dataclass(frozen=True)
class MemoryConfig:
    per_class: int = 1  # exemplar clips kept per old class; 0 = without memory
    oversample: float = 20.0  # each memory clip is drawn this many times as often as a new clip
    share: float = -1.0  # if in [0, 1]: fixed share of training draws from memory (overrides oversample)


@dataclass(frozen=True)
class EvalConfig:
    backend: str = "mir_eval"  # SDR/SIR/SAR backend: mir_eval (reference) | fast (fast_bss_eval)
    windows_per_clip: int = 4  # test windows per test clip, spread evenly over it (fewer if the clip is short)
    pairs_per_clip: int = 2  # test mixtures per test window (partners of other classes of tasks <= the clip's)
    batch_size: int = 8  # mixtures per evaluation forward pass
    seed: int = 1234  # seed of the fixed test-mixture list
    examples: int = 2  # example separations to keep as artifacts
    validate: bool = True  # score fixed validation mixtures (val split) after every step: what sweeps select on
    val_windows_per_clip: int = 2  # validation windows per val clip (built like the test set, from the val split)
    val_pairs_per_clip: int = 1  # validation mixtures per validation window
    val_seed: int = 4321  # seed of the fixed validation-mixture list (its own: never the test list's)
    val_metrics: str = "sdr"  # what validation scores: sdr (fast, what selection needs) | all (also SIR/SAR)


@dataclass(frozen=True)
class DataConfig:
    uri: str = ""  # dataset URI: file:///abs/path or s3://bucket/prefix
    classes_per_step: int = 5  # new classes per incremental step (paper: 5)
    num_steps: int = 4  # incremental steps T (paper: 4 x 5 = 20 classes)
    shuffle_classes: bool = False  # shuffle the manifest's class order with `seed`
    seed: int = 0  # seed of the class order shuffle
    different_classes: bool = True  # training mixtures pair clips of different classes
    cache_dir: str = ""  # node-local cache of the dataset ("" = ~/.cache/contavsep)


@dataclass(frozen=True)
class Config:
    preset: str = "paper"  # size and budget preset the config started from: paper | search | small | tiny
    audio: AudioConfig = field(default_factory=AudioConfig)  # STFT front end and mask targets
    model: ModelConfig = field(default_factory=ModelConfig)  # separator architecture
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation of each incremental step
    strategy: StrategyConfig = field(default_factory=StrategyConfig)  # continual-learning strategy and its weights
    memory: MemoryConfig = field(default_factory=MemoryConfig)  # exemplar memory (rehearsal)
    eval: EvalConfig = field(default_factory=EvalConfig)  # test mixtures and metrics
    data: DataConfig = field(default_factory=DataConfig)  # dataset and task split


# Size and budget presets: dotted overrides of the paper defaults. They change sizes and
# training budgets, never the method. Share of the paper's training mixtures per sequence
# (contavsep.budget; MUSIC-21 release lists | default synthetic benchmark, 24 train clips/class):
#   paper   the reference: batch 32, 100 epochs of the 40x list per step   100 %  | 75 %
#   search  full-size model, 8000 iterations x batch 8 per step               4.45 %
#   small   smaller model and crops, 300 iterations x batch 8                  0.167 %
#   tiny    test-sized model, 60 iterations x batch 8, lr 1e-3, no lr drops    0.0334 %
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "search": {
        "train.iters_per_step": 8000,  # lr drops keep the reference's shape: 2480, 4080 (U-Net), 6400
        "train.batch_size": 8,
    },
    "small": {
        "eval.backend": "fast",  # matches mir_eval within 0.01 dB (tests/contavsep/test_metrics.py)
        "audio.clip_samples": 32767,
        "audio.n_fft": 510,
        "audio.hop": 256,
        "audio.warp_bins": 128,
        "model.unet_channels": 32,
        "model.unet_depth": 6,
        "model.d_model": 128,
        "model.n_heads": 4,
        "model.ffn_dim": 512,
        "model.feature_dim": 128,
        "train.iters_per_step": 300,
        "train.batch_size": 8,
    },
    "tiny": {
        "eval.backend": "fast",  # matches mir_eval within 0.01 dB (tests/contavsep/test_metrics.py)
        "audio.clip_samples": 16383,
        "audio.n_fft": 510,
        "audio.hop": 256,
        "audio.warp_bins": 64,
        "model.unet_channels": 8,
        "model.unet_depth": 5,
        "model.d_model": 32,
        "model.n_heads": 4,
        "model.ffn_dim": 64,
        "model.decoder_layers": 2,
        "model.feature_dim": 32,
        "train.iters_per_step": 60,
        "train.batch_size": 8,
        "train.lr_drop_epochs_unet": "",  # 60 iterations at lr 1e-3: a drop would stop the learning tests rely on
        "train.lr_drop_epochs_transformer": "",
        "train.lr_unet": 1e-3,
        "train.lr_transformer": 1e-3,
    },
}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def valid_keys(cls: type | None = None, strategy: str | None = None) -> list[str]:
    """All dotted keys of ``Config`` (or of a section class), in declaration order. The
    ``strategy.*`` keys are those of ``strategy`` (a name), or of every registered strategy."""
    cls = Config if cls is None else cls
    keys: list[str] = []
    for f in dataclasses.fields(cls):
        tp = _field_types(cls)[f.name]
        if f.metadata.get("inline"):  # StrategyConfig.params: the strategy's own keys
            from contavsep.registry import STRATEGIES

            names = [strategy] if strategy is not None else STRATEGIES.names()
            for name in names:
                keys.extend(k for k in valid_keys(strategy_params(name)) if k not in keys)
        elif dataclasses.is_dataclass(tp):
            keys.extend(f"{f.name}.{k}" for k in valid_keys(typing.cast(type, tp), strategy))
        else:
            keys.append(f.name)
    return keys


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to the field type ``tp``; strings (from the CLI) are parsed."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        raise ConfigError(f"{key}: union-typed fields are not supported")  # none exist
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # a YAML true/false for a key whose values include "true"/"false"
            return "true" if value else "false"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - every field is bool/int/float/str
        raise ConfigError(f"{key}: unsupported field type {tp!r}")
    raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")


def _nest(items: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn a mapping with dotted and/or nested keys into one flat {dotted: value} dict."""
    out: dict[str, Any] = {}
    for key, value in items.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_nest(value, full + "."))
        else:
            out[full] = value
    return out


# Keys that existed once and were removed: why, for the error a user who sets one gets. Stored
# configs that still hold them (step checkpoints, sweep fingerprints) load without them.
RETIRED_KEYS = {
    "train.num_workers": "it configured nothing (batches are built by the producer thread, see train.prefetch_batches)",
}

# Keys added after configs were first stored (checkpoints, sweep records), with the value that
# was in effect before the key existed: a stored config without the key meant this, not today's
# default, so resuming it under the new default is refused as the change of setting it is.
LEGACY_DEFAULTS: dict[str, Any] = {
    "eval.val_metrics": "all",  # validation scored SDR, SIR and SAR before it could score SDR alone
}


def _apply(cfg: Any, updates: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with dotted ``updates`` applied (strict)."""
    types_ = _field_types(type(cfg))
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in updates.items():
        head, _, rest = key.partition(".")
        if prefix + key in RETIRED_KEYS:
            raise ConfigError(f"config key '{prefix}{key}' was removed: {RETIRED_KEYS[prefix + key]}; leave it out")
        if head not in types_:
            options = [prefix + k for k in valid_keys(type(cfg))]
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{did_you_mean(prefix + key, options)}; "
                f"see `contavsep config --keys` for all keys"
            )
        tp = types_[head]
        if dataclasses.is_dataclass(tp):
            if not rest:
                raise ConfigError(f"'{prefix}{key}' is a section; set one of its keys, e.g. '{prefix}{key}.{valid_keys(typing.cast(type, tp))[0]}'")
            grouped.setdefault(head, {})[rest] = value
        else:
            if rest:
                raise ConfigError(f"'{prefix}{head}' is a value, not a section (got '{prefix}{key}')")
            direct[head] = _coerce(prefix + head, value, tp)
    for head, sub in grouped.items():
        current = getattr(cfg, head)
        if isinstance(current, StrategyConfig):
            direct[head] = _apply_strategy(current, sub, f"{prefix}{head}.")
        else:
            direct[head] = _apply(current, sub, f"{prefix}{head}.")
    return dataclasses.replace(cfg, **direct)


def _apply_strategy(current: StrategyConfig, updates: Mapping[str, Any], prefix: str) -> StrategyConfig:
    """``strategy.name`` picks the ``Params`` class; the other keys are checked against its fields
    alone (a key of another strategy is refused, naming whose it is). A new name starts from the
    new strategy's defaults: a value of one strategy's key means nothing to another."""
    name = _coerce(f"{prefix}name", updates.get("name", current.name), str)
    params_cls = strategy_params(name)
    params = current.params if isinstance(current.params, params_cls) else params_cls()
    own = [f.name for f in dataclasses.fields(params_cls)]
    for key in updates:
        if key.startswith("name."):
            raise ConfigError(f"'{prefix}name' is a value, not a section (got '{prefix}{key}')")
        if key != "name" and key.partition(".")[0] not in own:
            owners = _strategies_with_key(key.partition(".")[0])
            whose = f" (a key of {', '.join(owners)})" if owners else did_you_mean(prefix + key, [prefix + k for k in own])
            has = ", ".join(prefix + k for k in own) or "none"
            raise ConfigError(f"strategy '{name}' has no key '{prefix}{key}'{whose}; its keys: {has}")
    rest = {k: v for k, v in updates.items() if k != "name"}
    return StrategyConfig(name=name, params=_apply(params, rest, prefix))


def _strategies_with_key(key: str) -> list[str]:
    """The registered strategies whose ``Params`` have a field ``key``."""
    from contavsep.registry import STRATEGIES

    return [n for n in STRATEGIES.names() if key in {f.name for f in dataclasses.fields(STRATEGIES.get(n).Params)}]


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Parse CLI ``k=v`` strings into a dict (values stay strings; typed on apply)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{pair}' must look like section.key=value, e.g. strategy.lambda_ins=0.2")
        out[key.strip()] = value.strip()
    return out


def yaml_error_line(exc: Exception) -> str:
    """A YAML parse error in one line: where it is and what is wrong (PyYAML's own message spans
    several lines with the offending text)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def load_yaml_overlay(path: str | Path) -> dict[str, Any]:
    """Read a YAML file of nested and/or dotted keys into a flat dotted dict."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(data).__name__}")
    return _nest(data)


def make_config(
    preset: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    yaml_path: str | Path | None = None,
) -> Config:
    """Build a validated config: preset, then YAML overlay, then dotted overrides.

    A ``preset`` key among the overrides or in the YAML selects the preset as well.
    """
    layers: list[dict[str, Any]] = []
    if yaml_path is not None:
        layers.append(load_yaml_overlay(yaml_path))
    if overrides:
        layers.append(_nest(overrides))
    for layer in layers:
        if "preset" in layer:
            preset = str(layer["preset"])
    # The strategy is chosen first, like the preset: its keys in any layer are its own.
    strategy = Config().strategy.name
    for layer in layers:
        if "strategy.name" in layer:
            strategy = layer["strategy.name"]
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'{did_you_mean(preset, list(PRESETS))}; choose from {sorted(PRESETS)}")
    cfg = _apply(Config(), {**PRESETS[preset], "preset": preset, "strategy.name": strategy})
    for layer in layers:
        cfg = _apply(cfg, {k: v for k, v in layer.items() if k != "preset"})
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return ``cfg`` with dotted ``overrides`` applied and validated (``preset`` is not allowed)."""
    flat_updates = _nest(overrides)
    if "preset" in flat_updates:
        raise ConfigError("'preset' can only be chosen when the config is created (make_config)")
    out = _apply(cfg, flat_updates)
    validate(out)
    return out


# The valid range of every numeric key: (bound, lower limit); ">" = strictly above, ">=" = at
# least. Upper limits and cross-field constraints are checked in :func:`validate`; a strategy's
# keys declare their own ranges in its Params (:func:`bounded`, :func:`one_of`).
_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE = (">", 0), (">=", 0), (">=", 1)
RANGES: dict[str, tuple[str, float]] = {
    "audio.sample_rate": _POSITIVE, "audio.clip_samples": _POSITIVE, "audio.n_fft": _POSITIVE, "audio.hop": _POSITIVE,
    "audio.warp_bins": _NON_NEGATIVE, "audio.mask_max": _POSITIVE, "audio.weight_min": _NON_NEGATIVE,
    "audio.weight_max": _POSITIVE,
    "model.unet_channels": _AT_LEAST_ONE, "model.unet_depth": _AT_LEAST_ONE, "model.mask_channels": _AT_LEAST_ONE,
    "model.d_model": _AT_LEAST_ONE, "model.n_heads": _AT_LEAST_ONE, "model.ffn_dim": _AT_LEAST_ONE,
    "model.encoder_layers": _NON_NEGATIVE, "model.decoder_layers": _AT_LEAST_ONE, "model.dropout": _NON_NEGATIVE,
    "model.object_dim": _AT_LEAST_ONE, "model.motion_tokens": _AT_LEAST_ONE, "model.motion_dim": _AT_LEAST_ONE,
    "model.feature_dim": _AT_LEAST_ONE,
    "train.iters_per_step": _NON_NEGATIVE, "train.epochs_per_step": _AT_LEAST_ONE, "train.dup_trainset": _AT_LEAST_ONE,
    "train.batch_size": _AT_LEAST_ONE, "train.lr_unet": _POSITIVE, "train.lr_transformer": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE, "train.lr_decay_gamma": _POSITIVE, "train.grad_clip": _NON_NEGATIVE,
    "train.val_every": _NON_NEGATIVE, "train.seed": _NON_NEGATIVE,
    "memory.per_class": _NON_NEGATIVE, "memory.oversample": _POSITIVE,
    "eval.windows_per_clip": _AT_LEAST_ONE, "eval.pairs_per_clip": _AT_LEAST_ONE, "eval.batch_size": _AT_LEAST_ONE,
    "eval.seed": _NON_NEGATIVE, "eval.examples": _NON_NEGATIVE,
    "eval.val_windows_per_clip": _AT_LEAST_ONE, "eval.val_pairs_per_clip": _AT_LEAST_ONE, "eval.val_seed": _NON_NEGATIVE,
    "data.classes_per_step": _AT_LEAST_ONE, "data.num_steps": _AT_LEAST_ONE, "data.seed": _NON_NEGATIVE,
}


def drop_epochs(value: str, key: str) -> tuple[int, ...]:
    """Parse a comma-separated list of epochs ("31,51"; "" = no drop) of config key ``key``."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    try:
        return tuple(sorted(int(p) for p in parts))
    except ValueError:
        raise ConfigError(f"{key} must be comma-separated whole epochs like '31,51' (or '' for none), got {value!r}") from None


def _check_ranges(cfg: Config) -> None:
    """Refuse non-finite floats and values below their key's lower limit (:data:`RANGES`)."""
    for key, value in flat(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        if key in RANGES:
            op, limit = RANGES[key]
            if (op == ">" and not value > limit) or (op == ">=" and not value >= limit):
                raise ConfigError(f"{key} must be {op} {limit:g}, got {value}")


def _check_declared(params: Any, prefix: str) -> None:
    """The ranges and choices a ``Params`` class declares with :func:`bounded` and :func:`one_of`."""
    for f in dataclasses.fields(params):
        key, value, rule = prefix + f.name, getattr(params, f.name), f.metadata
        if rule.get("choices") is not None and value not in rule["choices"]:
            raise ConfigError(f"{key} must be one of {', '.join(rule['choices'])}, got '{value}'")
        low, high, above = rule.get("at_least"), rule.get("at_most"), rule.get("above")
        if low is not None and high is not None and not low <= value <= high:
            raise ConfigError(f"{key} must be in [{low:g}, {high:g}], got {value}")
        if low is not None and not value >= low:
            raise ConfigError(f"{key} must be >= {low:g}, got {value}")
        if high is not None and not value <= high:
            raise ConfigError(f"{key} must be <= {high:g}, got {value}")
        if above is not None and not value > above:
            raise ConfigError(f"{key} must be > {above:g}, got {value}")


def validate(cfg: Config) -> None:
    """Check the value ranges (:data:`RANGES`) and the cross-field constraints types cannot express."""
    _check_ranges(cfg)
    a, m = cfg.audio, cfg.model
    if a.weight_min > a.weight_max:
        raise ConfigError(f"audio.weight_min ({a.weight_min}) must not exceed audio.weight_max ({a.weight_max})")
    if m.dropout >= 1:
        raise ConfigError(f"model.dropout must be < 1, got {m.dropout}")
    if a.hop > a.n_fft:
        raise ConfigError(f"audio.hop ({a.hop}) must not exceed audio.n_fft ({a.n_fft})")
    frames = 1 + a.clip_samples // a.hop
    freq = a.warp_bins if a.warp_bins > 0 else a.n_fft // 2 + 1
    step = 2**m.unet_depth
    if frames % step or freq % step:
        raise ConfigError(
            f"the spectrogram grid {freq} x {frames} (audio.warp_bins x 1 + audio.clip_samples // audio.hop)"
            f" must be divisible by 2**model.unet_depth = {step}"
        )
    if m.unet_depth < 4:
        raise ConfigError("model.unet_depth must be >= 4 (the transformer reads the 1/8-resolution decoder feature)")
    if m.d_model % m.n_heads:
        raise ConfigError(f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    if m.decoder_layers < 1 or (m.name == "iquery" and m.decoder_layers < 2):
        raise ConfigError(
            "model.decoder_layers must be >= 2 for iquery (the first layer attends to motion only, so"
            " with 1 layer the queries never see the audio) and >= 1 otherwise"
        )
    from contavsep.registry import MODELS, RegistryError

    try:
        MODELS.check(m.name)
    except RegistryError as exc:
        raise ConfigError(f"model.name: {exc}") from None
    if not isinstance(cfg.strategy.params, strategy_params(cfg.strategy.name)):
        raise ConfigError(f"strategy.params must be strategy '{cfg.strategy.name}''s own Params; build configs with make_config")
    for key in ("lr_drop_epochs_unet", "lr_drop_epochs_transformer"):
        for epoch in drop_epochs(getattr(cfg.train, key), f"train.{key}"):
            if not 0 < epoch < cfg.train.epochs_per_step:
                raise ConfigError(
                    f"train.{key}: epoch {epoch} is not inside a step of train.epochs_per_step={cfg.train.epochs_per_step}"
                    f" epochs (1 .. {cfg.train.epochs_per_step - 1}); lower it or leave the drop out"
                )
    if cfg.train.compile not in COMPILE_MODES:
        raise ConfigError(f"train.compile must be one of {', '.join(COMPILE_MODES)}, got '{cfg.train.compile}'")
    for key in ("channels_last", "fused_optimizer"):
        if getattr(cfg.train, key) not in SWITCH_VALUES:
            raise ConfigError(f"train.{key} must be one of {', '.join(SWITCH_VALUES)}, got '{getattr(cfg.train, key)}'")
    if cfg.train.decoder_conv not in DECODER_CONVS:
        raise ConfigError(f"train.decoder_conv must be one of {', '.join(DECODER_CONVS)}, got '{cfg.train.decoder_conv}'")
    if cfg.train.encoder_conv not in ENCODER_CONVS:
        raise ConfigError(f"train.encoder_conv must be one of {', '.join(ENCODER_CONVS)}, got '{cfg.train.encoder_conv}'")
    if cfg.train.prefetch_batches < 0:
        raise ConfigError("train.prefetch_batches must be >= 0 (0 = prepare batches on the training thread)")
    if cfg.train.select not in ("last", "best_val"):
        raise ConfigError(f"train.select must be 'last' or 'best_val', got '{cfg.train.select}'")
    if cfg.eval.backend not in ("mir_eval", "fast"):
        raise ConfigError(f"eval.backend must be 'mir_eval' or 'fast', got '{cfg.eval.backend}'")
    if cfg.eval.val_metrics not in ("sdr", "all"):
        raise ConfigError(f"eval.val_metrics must be 'sdr' (SDR only, the fast default) or 'all' (also SIR/SAR), got '{cfg.eval.val_metrics}'")
    if cfg.memory.share > 1:
        raise ConfigError("memory.share must be <= 1 (negative = use memory.oversample)")


def flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """The config as {dotted key: value}, the vocabulary of CLI, search spaces, Tune and MLflow."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("inline"):
            out.update(flat(value, prefix))
        elif dataclasses.is_dataclass(value):
            out.update(flat(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def from_flat(items: Mapping[str, Any]) -> Config:
    """Rebuild a config from :func:`flat` output (e.g. a checkpoint's resolved config); keys
    retired since it was written are dropped, keys added since it was written take the value
    that was in effect then (:data:`LEGACY_DEFAULTS`)."""
    kept = {k: v for k, v in items.items() if k != "preset" and k not in RETIRED_KEYS}
    kept.update({k: v for k, v in LEGACY_DEFAULTS.items() if k not in items})
    # written before each strategy declared its own keys: the other strategies' keys go
    own = valid_keys(strategy=str(items.get("strategy.name", Config().strategy.name)))
    kept = {k: v for k, v in kept.items() if k in own or k not in LEGACY_STRATEGY_DEFAULTS}
    return make_config(str(items.get("preset", "paper")), kept)


def to_yaml(cfg: Config) -> str:
    """The resolved config as nested YAML (an MLflow / checkpoint artifact)."""
    import yaml

    nested: dict[str, Any] = {}
    for key, value in flat(cfg).items():  # nested by section, a strategy's keys inline as in flat()
        *sections, name = key.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = value
    return yaml.safe_dump(nested, sort_keys=False)
