"""The size and budget presets a config starts from."""

from __future__ import annotations

from typing import Any

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
