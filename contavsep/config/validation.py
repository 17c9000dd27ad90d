"""Validation: the range of every numeric key and the cross-field constraints types cannot express."""

from __future__ import annotations

import math

from contavsep.config.error import ConfigError
from contavsep.config.keys import flat
from contavsep.config.schema import COMPILE_MODES, DECODER_CONVS, ENCODER_CONVS, SWITCH_VALUES, Config
from contavsep.config.strategy_params import strategy_params

# The valid range of every numeric key: (bound, lower limit); ">" = strictly above, ">=" = at
# least. Upper limits and cross-field constraints are checked in :func:`validate`; a strategy's
# keys declare their own ranges in its Params (:func:`bounded`, :func:`one_of`).
_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE = (">", 0), (">=", 0), (">=", 1)
RANGES: dict[str, tuple[str, float]] = {
    "audio.sample_rate": _POSITIVE,
    "audio.clip_samples": _POSITIVE,
    "audio.n_fft": _POSITIVE,
    "audio.hop": _POSITIVE,
    "audio.warp_bins": _NON_NEGATIVE,
    "audio.mask_max": _POSITIVE,
    "audio.weight_min": _NON_NEGATIVE,
    "audio.weight_max": _POSITIVE,
    "model.unet_channels": _AT_LEAST_ONE,
    "model.unet_depth": _AT_LEAST_ONE,
    "model.mask_channels": _AT_LEAST_ONE,
    "model.d_model": _AT_LEAST_ONE,
    "model.n_heads": _AT_LEAST_ONE,
    "model.ffn_dim": _AT_LEAST_ONE,
    "model.encoder_layers": _NON_NEGATIVE,
    "model.decoder_layers": _AT_LEAST_ONE,
    "model.dropout": _NON_NEGATIVE,
    "model.object_dim": _AT_LEAST_ONE,
    "model.motion_tokens": _AT_LEAST_ONE,
    "model.motion_dim": _AT_LEAST_ONE,
    "model.feature_dim": _AT_LEAST_ONE,
    "train.iters_per_step": _NON_NEGATIVE,
    "train.epochs_per_step": _AT_LEAST_ONE,
    "train.dup_trainset": _AT_LEAST_ONE,
    "train.batch_size": _AT_LEAST_ONE,
    "train.lr_unet": _POSITIVE,
    "train.lr_transformer": _POSITIVE,
    "train.weight_decay": _NON_NEGATIVE,
    "train.lr_decay_gamma": _POSITIVE,
    "train.grad_clip": _NON_NEGATIVE,
    "train.val_every": _NON_NEGATIVE,
    "train.seed": _NON_NEGATIVE,
    "memory.per_class": _NON_NEGATIVE,
    "memory.oversample": _POSITIVE,
    "eval.windows_per_clip": _AT_LEAST_ONE,
    "eval.pairs_per_clip": _AT_LEAST_ONE,
    "eval.batch_size": _AT_LEAST_ONE,
    "eval.seed": _NON_NEGATIVE,
    "eval.examples": _NON_NEGATIVE,
    "eval.val_windows_per_clip": _AT_LEAST_ONE,
    "eval.val_pairs_per_clip": _AT_LEAST_ONE,
    "eval.val_seed": _NON_NEGATIVE,
    "data.classes_per_step": _AT_LEAST_ONE,
    "data.num_steps": _AT_LEAST_ONE,
    "data.seed": _NON_NEGATIVE,
}


def drop_epochs(value: str, key: str) -> tuple[int, ...]:
    """Parse a comma-separated list of epochs ("31,51"; "" = no drop) of config key ``key``."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    try:
        return tuple(sorted(int(p) for p in parts))
    except ValueError:
        raise ConfigError(
            f"{key} must be comma-separated whole epochs like '31,51' (or '' for none), got {value!r}"
        ) from None


def _check_ranges(cfg: Config) -> None:
    """Refuse non-finite floats and values below their key's lower limit (:data:`RANGES`)."""
    for key, value in flat(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        if key in RANGES:
            op, limit = RANGES[key]
            if (op == ">" and not value > limit) or (op == ">=" and not value >= limit):
                raise ConfigError(f"{key} must be {op} {limit:g}, got {value}")


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
        raise ConfigError(
            f"strategy.params must be strategy '{cfg.strategy.name}''s own Params; build configs with make_config"
        )
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
        raise ConfigError(
            f"train.decoder_conv must be one of {', '.join(DECODER_CONVS)}, got '{cfg.train.decoder_conv}'"
        )
    if cfg.train.encoder_conv not in ENCODER_CONVS:
        raise ConfigError(
            f"train.encoder_conv must be one of {', '.join(ENCODER_CONVS)}, got '{cfg.train.encoder_conv}'"
        )
    if cfg.train.prefetch_batches < 0:
        raise ConfigError("train.prefetch_batches must be >= 0 (0 = prepare batches on the training thread)")
    if cfg.train.select not in ("last", "best_val"):
        raise ConfigError(f"train.select must be 'last' or 'best_val', got '{cfg.train.select}'")
    if cfg.eval.backend not in ("mir_eval", "fast"):
        raise ConfigError(f"eval.backend must be 'mir_eval' or 'fast', got '{cfg.eval.backend}'")
    if cfg.eval.val_metrics not in ("sdr", "all"):
        raise ConfigError(
            f"eval.val_metrics must be 'sdr' (SDR only, the fast default) or 'all' (also SIR/SAR), got '{cfg.eval.val_metrics}'"
        )
    if cfg.memory.share > 1:
        raise ConfigError("memory.share must be <= 1 (negative = use memory.oversample)")
