"""Co-Separation-style separator: a U-Net conditioned on the object feature at its bottleneck.

The encoder runs once per mixture. Per source, the projected object feature (``d_model``
channels) is tiled over the bottleneck grid and concatenated to the bottleneck; the decoder
(with the mixture's skip connections) produces ``mask_channels`` features, a 1x1 convolution
turns them into the mask logit, and a sigmoid gives the mask. Motion and the class id are not
read (the class-query mechanism belongs to iQuery); the forward signature is the same so the
engine and strategies treat both separators alike.

CrossSDC features: the separated sound is the mask-weighted mean of the source's mask features
through a linear head; the object feature is the projected object feature (through a linear
head only when ``feature_dim`` differs from ``d_model``); motion is ``None``.

Deviation from Gao & Grauman (2019): their last up-convolution outputs the one-channel mask
directly; here it outputs ``mask_channels`` features followed by a 1x1 convolution so that the
separated-sound feature has something richer than the mask to pool.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contavsep.config import ModelConfig
from contavsep.models.output import SeparatorOutput, check_separator_inputs
from contavsep.models.separator import Separator
from contavsep.models.unet import UNet


class CoSeparationSeparator(Separator):
    """U-Net separator conditioned on each source's object feature.

    Args:
        cfg: model sizes (``unet_*``, ``mask_channels``, ``d_model`` as the fusion width,
            ``object_dim``, ``feature_dim``).
        num_classes: classes seen so far (kept for the common interface; not read).

    Shape:
        - mix_input: :math:`(B, 1, F, T)` log1p magnitude of the mixture on the warped grid.
        - class_ids: :math:`(B, N)` (not read); object_features: :math:`(B, N, D_o)`;
          motion_features: :math:`(B, N, T_m, D_m)` or ``None`` (not read).
        - output: :class:`SeparatorOutput` with masks :math:`(B, N, F, T)`, motion ``None``.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg = cfg
        self._num_classes = num_classes
        self.unet = UNet(cfg.unet_channels, cfg.unet_depth, cfg.mask_channels, condition_channels=cfg.d_model)
        self.object_proj = nn.Linear(cfg.object_dim, cfg.d_model)
        self.mask_head = nn.Conv2d(cfg.mask_channels, 1, kernel_size=1)
        self.audio_head = nn.Linear(cfg.mask_channels, cfg.feature_dim)
        self.object_head: nn.Module = (
            nn.Identity() if cfg.d_model == cfg.feature_dim else nn.Linear(cfg.d_model, cfg.feature_dim)
        )

    @property
    def num_classes(self) -> int:
        """Classes seen so far."""
        return self._num_classes

    def expand_classes(self, new_total: int) -> None:
        """Record that ``new_total`` classes are seen; nothing is class-specific in this model."""
        if new_total < self._num_classes:
            raise ValueError(f"cannot shrink the number of classes from {self._num_classes} to {new_total}")
        self._num_classes = new_total

    def forward(
        self,
        mix_input: Tensor,
        class_ids: Tensor,
        object_features: Tensor,
        motion_features: Tensor | None = None,
        return_internals: bool = False,
    ) -> SeparatorOutput:
        check_separator_inputs(
            mix_input,
            class_ids,
            object_features,
            motion_features,
            object_dim=self.cfg.object_dim,
            motion_shape=None,
            num_classes=None,
        )
        b, n = class_ids.shape
        skips = self.unet.encode(mix_input)
        objects = self.object_proj(object_features.reshape(b * n, -1))  # (BN, D)
        h, w = skips[-1].shape[-2:]
        condition = objects[:, :, None, None].expand(-1, -1, h, w)
        # The encoder is shared by a mixture's sources; the conditioned decoder runs per source.
        decoding = self.unet.decode([s.repeat_interleave(n, dim=0) for s in skips], condition)
        features = decoding.mask_features  # (BN, C_m, F, T)
        # Outputs are float32 even under bf16 autocast: losses and distillation targets need the precision.
        masks = torch.sigmoid(self.mask_head(features).float())  # (BN, 1, F, T)
        pooled = (masks * features).sum(dim=(2, 3)) / masks.sum(dim=(2, 3)).clamp_min(1e-6)
        return SeparatorOutput(
            masks=masks.view(b, n, *masks.shape[-2:]),
            audio_features=self.audio_head(pooled).view(b, n, -1).float(),
            object_features=self.object_head(objects).view(b, n, -1).float(),
            motion_features=None,
            attention=None,
            unet_features=tuple(skips) + decoding.decoder_maps if return_internals else None,
        )
