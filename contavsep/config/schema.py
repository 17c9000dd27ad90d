"""The schema: one frozen dataclass per config section, :class:`Config` holding them, and the
allowed values of the speed and layout switches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    # (the reference's lr_steps 30 50 are 0-based indices)
    lr_drop_epochs_unet: str = "31,51"  # epochs after which the U-Net lr drops
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
    channels_last: str = "auto"  # auto | true | false: U-Net convolutions channels-last (tensor cores on CUDA)
    compile: str = "auto"  # auto | off | default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs: torch.compile of the training forward
    fused_optimizer: str = "auto"  # auto | true | false: fused Adam/AdamW kernels (one launch per parameter group)
    # (contavsep/first_step.py)
    share_first_step: bool = True  # reuse a sweep's step 0 trained by a trial with the same step-0 keys
    decoder_conv: str = "transposed"  # U-Net decoder "2x nearest upsample + 3x3 conv" as one stride-2 transposed conv (2.25x fewer FLOPs) | subpixel (the same taps as a stride-1 conv + depth-to-space) | upsample (literally)
    encoder_conv: str = "strided"  # U-Net encoder 4x4 stride-2 convs as written | space_to_depth (a stride-1 2x2 conv over 2x2 blocks, same FLOPs)


# train.* keys that change speed, not results (TrainConfig's "Speed only" block): left out of a
# shared first step's key and of what a sweep's --resume must keep equal.
SPEED_KEYS = (
    "train.prefetch_batches",
    "train.channels_last",
    "train.compile",
    "train.fused_optimizer",
    "train.decoder_conv",
    "train.encoder_conv",
    "train.share_first_step",
)

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
    cache_dir: str = ""  # node-local dataset cache ("" = ~/.cache/contavsep); {node}: the Ray node id


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
