"""The audio-visual transformer of iQuery: class queries read motion, then the audio latent.

Post-norm DETR/MaskFormer layers (as in the iQuery / ContAV-Sep reference):

- encoder: ``encoder_layers`` self-attention layers over the audio latent tokens, with 2D sine
  positions added to queries and keys;
- decoder layer 1: the queries cross-attend to the motion tokens (1D sine positions) + FFN;
- decoder layers 2..: query self-attention, cross-attention to the encoded audio tokens, FFN;
- a final LayerNorm.

The learnable class queries act as positional embeddings of the decoder (added to queries and
keys in every layer) while the decoder content starts at zero plus the object feature on the
row of the sample's class.

Parameter count vs. the reference: the reference gives every decoder layer all three attention
blocks (self, audio, motion) and their norms although layer 1 only uses motion attention and the
others never use it. Those 1.32 M parameters (at width 256) never receive a gradient; they are
not built here (they would also force DDP's ``find_unused_parameters``). The function computed is
the same.

Efficiency: cross-attention treats every query independently, so the decoder attends from all
``N`` sources' queries of a mixture to that mixture's audio tokens in one call: the audio keys
and values are projected once per mixture, not once per source.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_positions_2d(height: int, width: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Normalised 2D sine-cosine positions (DETR style), ``dim / 2`` channels per axis, y first.

    Shape:
        - output: :math:`(H W, D)`, row-major over the grid (matches ``x.flatten(2)``).
    """
    if dim % 4:
        raise ValueError(f"2D sine positions need a width divisible by 4, got {dim}")
    half = dim // 2
    scale = 2 * math.pi
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    # Channel pair (2k, 2k+1) shares the frequency 10000**(2k / half): sin on even, cos on odd.
    freq = 10000.0 ** (2 * (torch.arange(half, device=device) // 2).float() / half)

    def encode(coord: Tensor) -> Tensor:
        phase = coord[:, None] / freq  # (L, half)
        return torch.stack([phase[:, 0::2].sin(), phase[:, 1::2].cos()], dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat([pos_y, pos_x], dim=2).reshape(height * width, dim)


def sine_positions_1d(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Transformer sine-cosine positions for ``0 .. length-1`` (sin on even, cos on odd channels).

    Shape:
        - output: :math:`(L, D)`
    """
    if dim % 2:
        raise ValueError(f"1D sine positions need an even width, got {dim}")
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq)
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections; batch-first.

    Uses fused scaled-dot-product attention unless the weights are asked for. The returned
    weights are the softmax before dropout (what a distillation loss should read).

    Shape:
        - query: :math:`(B, L_q, D)`; key, value: :math:`(B, L_k, D)`
        - output: :math:`(B, L_q, D)`; weights: :math:`(B, H, L_q, L_k)` or ``None``
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        b, length, d = x.shape
        return x.view(b, length, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
            out = F.dropout(weights, p, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        b, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, length, -1)), weights


class FeedForward(nn.Module):
    """Linear -> ReLU -> dropout -> Linear. Shape: :math:`(..., D) \\to (..., D)`."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer over audio tokens. Shape: :math:`(B, L, D) \\to (B, L, D)`."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, pos: Tensor) -> Tensor:
        qk = tokens + pos
        tokens = self.norm1(tokens + self.dropout(self.self_attn(qk, qk, tokens)[0]))
        return self.norm2(tokens + self.dropout(self.ffn(tokens)))


class MotionDecoderLayer(nn.Module):
    """First decoder layer: queries cross-attend to motion tokens, then FFN (no self-attention).

    Shape:
        - content, query_pos: :math:`(S, Q, D)`; motion, motion_pos: :math:`(S, T_m, D)`
    """

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.motion_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, content: Tensor, query_pos: Tensor, motion: Tensor, motion_pos: Tensor) -> Tensor:
        attended = self.motion_attn(content + query_pos, motion + motion_pos, motion)[0]
        content = self.norm1(content + self.dropout(attended))
        return self.norm2(content + self.dropout(self.ffn(content)))


class AudioDecoderLayer(nn.Module):
    """Decoder layer: self-attention among a source's queries, cross-attention to audio, FFN.

    Cross-attention runs per mixture: the ``N`` sources' queries of a mixture are laid side by
    side (``N * Q`` rows) against that mixture's audio tokens.

    Shape:
        - content, query_pos: :math:`(B N, Q, D)`; audio, audio_pos: :math:`(B, L, D)`
        - output: :math:`(B N, Q, D)`; weights: :math:`(B, H, N Q, L)` or ``None``
    """

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.audio_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, content: Tensor, query_pos: Tensor, audio: Tensor, audio_pos: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        qk = content + query_pos
        content = self.norm1(content + self.dropout(self.self_attn(qk, qk, content)[0]))
        sources, queries, d = content.shape
        b = audio.shape[0]
        per_mixture = (content + query_pos).reshape(b, (sources // b) * queries, d)
        attended, weights = self.audio_attn(per_mixture, audio + audio_pos, audio, need_weights)
        content = self.norm2(content + self.dropout(attended.reshape(sources, queries, d)))
        return self.norm3(content + self.dropout(self.ffn(content))), weights


class AVTransformer(nn.Module):
    """Audio-token encoder + query decoder (motion layer first, then audio layers).

    Args:
        d_model, n_heads, ffn_dim, dropout: layer sizes.
        encoder_layers: self-attention layers over the audio tokens (may be 0).
        decoder_layers: total decoder layers, >= 2 (one motion layer + at least one audio layer,
            or the queries never see the mixture).

    Shape:
        - audio: :math:`(B, D, h, w)` projected U-Net latent.
        - content, query_pos: :math:`(B N, Q, D)` decoder input and class-query positions.
        - motion: :math:`(B N, T_m, D)` projected motion tokens.
        - output: decoded queries :math:`(B N, Q, D)` (after the final norm) and, if asked,
          the last layer's audio attention :math:`(B, H, N Q, h w)`.
    """

    def __init__(
        self, d_model: int, n_heads: int, ffn_dim: int, encoder_layers: int, decoder_layers: int, dropout: float
    ):
        super().__init__()
        if decoder_layers < 2:
            raise ValueError(
                f"the iQuery decoder needs >= 2 layers (the first reads motion only, the rest read the audio), "
                f"got model.decoder_layers={decoder_layers}"
            )
        self.d_model = d_model
        self.encoder = nn.ModuleList(EncoderLayer(d_model, n_heads, ffn_dim, dropout) for _ in range(encoder_layers))
        self.motion_layer = MotionDecoderLayer(d_model, n_heads, ffn_dim, dropout)
        self.audio_layers = nn.ModuleList(
            AudioDecoderLayer(d_model, n_heads, ffn_dim, dropout) for _ in range(decoder_layers - 1)
        )
        self.norm = nn.LayerNorm(d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Xavier on every matrix, as the reference Transformer does; zero attention biases.
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                for proj in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
                    nn.init.zeros_(proj.bias)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Encode the audio latent once per mixture.

        Shape:
            - audio: :math:`(B, D, h, w)`
            - output: tokens :math:`(B, h w, D)` and their positions :math:`(h w, D)`
        """
        b, d, h, w = audio.shape
        pos = sine_positions_2d(h, w, d, device=audio.device).to(audio.dtype)
        tokens = audio.flatten(2).transpose(1, 2)
        for layer in self.encoder:
            tokens = layer(tokens, pos)
        return tokens, pos

    def forward(
        self, audio: Tensor, content: Tensor, query_pos: Tensor, motion: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        tokens, pos = self.encode(audio)
        motion_pos = sine_positions_1d(motion.shape[1], self.d_model, device=motion.device).to(motion.dtype)
        content = self.motion_layer(content, query_pos, motion, motion_pos)
        weights = None
        last = len(self.audio_layers) - 1
        for i, layer in enumerate(self.audio_layers):
            content, weights = layer(content, query_pos, tokens, pos, need_weights and i == last)
        return self.norm(content), weights
