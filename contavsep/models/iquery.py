"""iQuery separator, the base model of ContAV-Sep: U-Net + audio-visual transformer + class queries.

Per mixture: the U-Net turns the log-magnitude mixture into mask features (``mask_channels`` at
full grid) and a latent (``4 * unet_channels`` at 1/8 grid); the transformer encodes the latent
tokens once. Per source: every seen class has a learnable query; the source's projected object
(CLIP) feature is added to the decoder content of its class's row, the decoder reads the
source's projected motion (VideoMAE) tokens, then the mixture's audio tokens. The used query's
last-layer output is embedded to ``mask_channels`` weights, and the mask is
``sigmoid(sum_c weight_c * mask_feature_c)``. Only that one query's mask is computed (the
reference computed every layer x every query and discarded all but one).

CrossSDC features (as the reference): the used query's decoder output (separated sound), the
projected object feature, and the time-mean of the projected motion tokens; each goes through a
linear head only when ``feature_dim`` differs from ``d_model`` (at every preset they are equal).

Parameter count at the ``paper`` preset with 5 classes: U-Net 30,274,178; everything else
5,209,632. The ~6.5 M often quoted for the transformer part (reference: 6,528,032) includes
1,318,400 parameters of attention blocks the reference builds but never uses (see
:mod:`contavsep.models.av_transformer`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contavsep.config import ModelConfig
from contavsep.models.av_transformer import AVTransformer
from contavsep.models.output import SeparatorOutput, check_separator_inputs
from contavsep.models.separator import Separator
from contavsep.models.unet import UNet


class IQuerySeparator(Separator):
    """iQuery-style separator with one query per seen class.

    Args:
        cfg: model sizes (``unet_*``, ``mask_channels``, transformer sizes, input and feature
            dimensions).
        num_classes: number of class queries to start with (grow with :meth:`expand_classes`).

    Shape:
        - mix_input: :math:`(B, 1, F, T)` log1p magnitude of the mixture on the warped grid.
        - class_ids: :math:`(B, N)` class of each source to separate.
        - object_features: :math:`(B, N, D_o)`; motion_features: :math:`(B, N, T_m, D_m)`.
        - output: :class:`SeparatorOutput` with masks :math:`(B, N, F, T)`.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.cfg = cfg
        d = cfg.d_model
        self.unet = UNet(cfg.unet_channels, cfg.unet_depth, cfg.mask_channels)
        latent_channels = 4 * cfg.unet_channels
        # The reference projects the latent only when its width differs from the transformer's.
        self.input_proj: nn.Module = nn.Identity() if latent_channels == d else nn.Conv2d(latent_channels, d, 1)
        self.transformer = AVTransformer(
            d, cfg.n_heads, cfg.ffn_dim, cfg.encoder_layers, cfg.decoder_layers, cfg.dropout
        )
        self.class_queries = nn.Parameter(torch.randn(num_classes, d))
        self.object_proj = nn.Linear(cfg.object_dim, d)
        self.motion_proj = nn.Linear(cfg.motion_dim, d)
        self.mask_embed = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU(), nn.Linear(d, cfg.mask_channels)
        )
        self.audio_head = _feature_head(d, cfg.feature_dim)
        self.object_head = _feature_head(d, cfg.feature_dim)
        self.motion_head = _feature_head(d, cfg.feature_dim)

    @property
    def num_classes(self) -> int:
        """Number of class queries (classes seen so far)."""
        return self.class_queries.shape[0]

    @torch.no_grad()
    def expand_classes(self, new_total: int) -> None:
        """Grow the class queries to ``new_total`` rows; old rows are copied, new ones drawn N(0, 1).

        The query parameter is replaced, so an optimizer built before must be rebuilt.
        """
        old = self.class_queries
        if new_total < old.shape[0]:
            raise ValueError(f"cannot shrink the class queries from {old.shape[0]} to {new_total}")
        if new_total == old.shape[0]:
            return
        grown = torch.randn(new_total, old.shape[1], device=old.device, dtype=old.dtype)
        grown[: old.shape[0]] = old
        self.class_queries = nn.Parameter(grown, requires_grad=old.requires_grad)

    def forward(
        self,
        mix_input: Tensor,
        class_ids: Tensor,
        object_features: Tensor,
        motion_features: Tensor,
        return_internals: bool = False,
    ) -> SeparatorOutput:
        cfg = self.cfg
        check_separator_inputs(
            mix_input,
            class_ids,
            object_features,
            motion_features,
            object_dim=cfg.object_dim,
            motion_shape=(cfg.motion_tokens, cfg.motion_dim),
            num_classes=self.num_classes,
        )
        b, n = class_ids.shape
        skips = self.unet.encode(mix_input)
        decoding = self.unet.decode(skips)
        audio = self.input_proj(decoding.latent)  # (B, D, F/8, T/8)

        ids = class_ids.reshape(b * n)
        objects = self.object_proj(object_features.reshape(b * n, -1))  # (BN, D)
        motion = self.motion_proj(motion_features.reshape(b * n, cfg.motion_tokens, -1))  # (BN, T_m, D)
        # Decoder content: zero everywhere except the object feature on the source's class row.
        # (a comparison rather than one_hot(ids, Q): Q stays symbolic under torch.compile, so
        # adding the next step's queries does not compile the forward again)
        rows = (ids[:, None] == torch.arange(self.class_queries.shape[0], device=ids.device)).to(
            objects.dtype
        )  # (BN, Q)
        content = rows[:, :, None] * objects[:, None, :]
        query_pos = self.class_queries.to(objects.dtype).expand(b * n, -1, -1)
        decoded, weights = self.transformer(audio, content, query_pos, motion, need_weights=return_internals)

        used = decoded[torch.arange(b * n, device=ids.device), ids]  # (BN, D)
        mask_weights = self.mask_embed(used).view(b, n, -1)  # (B, N, C_m)
        # Outputs are float32 even under bf16 autocast: losses and distillation targets need the precision.
        masks = torch.sigmoid(mask_product(mask_weights, decoding.mask_features).float()).contiguous()

        attention = None
        unet_features = None
        if return_internals:
            assert weights is not None
            heads, length = weights.shape[1], weights.shape[-1]
            # (B, H, N Q, L) -> (B, N, Q, H, L), then the row of each source's class.
            per_query = weights.view(b, heads, n, self.num_classes, length).permute(0, 2, 3, 1, 4)
            mixtures = torch.arange(b, device=ids.device)[:, None]
            sources = torch.arange(n, device=ids.device)[None, :]
            attention = per_query[mixtures, sources, class_ids].float()  # (B, N, H, L)
            unet_features = tuple(skips) + decoding.decoder_maps
        return SeparatorOutput(
            masks=masks,
            audio_features=self.audio_head(used).view(b, n, -1).float(),
            object_features=self.object_head(objects).view(b, n, -1).float(),
            motion_features=self.motion_head(motion.mean(dim=1)).view(b, n, -1).float(),
            attention=attention,
            unet_features=unet_features,
        )


def mask_product(weights: Tensor, features: Tensor) -> Tensor:
    """Per source, the weighted sum of the mask feature channels: ``einsum("bnc,bcft->bnft")``.

    One batched matrix product laid out the way ``features`` is stored, so the full-size
    feature map (32 channels x the whole grid: 134 MB at the paper preset, batch 32, bf16) is
    never copied: channels_last features are read as ``(B, F T, C)`` (a view), contiguous ones
    as ``(B, C, F T)``. Only the small ``N``-channel result changes layout. ``einsum`` copies
    channels_last features into NCHW first (one full-size ``aten::copy_`` per forward, seen
    in the profiler; issue 11's H100 profile spent 1.5 ms of a 12 ms iteration in copies).

    Shape:
        - weights: :math:`(B, N, C)`; features: :math:`(B, C, F, T)`
        - output: :math:`(B, N, F, T)` (a permuted view for channels_last features)
    """
    b, c, f, t = features.shape
    if c > 1 and not features.is_contiguous() and features.is_contiguous(memory_format=torch.channels_last):
        flat = features.permute(0, 2, 3, 1).reshape(b, f * t, c)  # a view of the NHWC storage
        return torch.bmm(flat, weights.transpose(1, 2)).view(b, f, t, -1).permute(0, 3, 1, 2)
    return torch.bmm(weights, features.reshape(b, c, f * t)).view(b, -1, f, t)


def _feature_head(in_dim: int, feature_dim: int) -> nn.Module:
    """CrossSDC head: identity when the sizes agree (the reference has none), else a linear map."""
    return nn.Identity() if in_dim == feature_dim else nn.Linear(in_dim, feature_dim)
