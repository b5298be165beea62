"""The answer model: METER's co-attention fusion over the encoders' tokens, pooled into a
classifier over the answer vocabulary (Dou et al. 2022, the fusion the BiomedCLIP paper used).

Both streams are projected to the fusion's width W and tagged with a modality embedding; each
layer updates the text tokens by self-attention then cross-attention to the image tokens, and the
image tokens by self-attention then cross-attention to the text tokens (each stream attends to
the other's output of the previous layer), then a feed-forward block. METER's layers are post-norm
BERT layers; these are pre-norm, which trains stably from scratch on small data. The first token
of each stream (the image's CLS, the question's [CLS]) goes through a pooler (linear + tanh); the
two are concatenated and classified by METER's VQA head (2W -> 4W, LayerNorm, GELU -> answers).
"""

from __future__ import annotations

import torch
from torch import nn

from biomedclip.vqa.params import FusionParams


class CrossLayer(nn.Module):
    """One co-attention layer of one stream: self-attention, cross-attention to the other
    stream, feed-forward; pre-norm residuals."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = (nn.LayerNorm(width) for _ in range(3))
        self.self_attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(width, heads, dropout=dropout,
                                                     batch_first=True)
        hidden = round(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, x_pad: torch.Tensor | None, other: torch.Tensor,
                other_pad: torch.Tensor | None) -> torch.Tensor:
        # x: (B, N, W) this stream; other: (B, M, W); *_pad: (B, N) / (B, M) True on padding
        h = self.norm_self(x)
        x = x + self.self_attention(h, h, h, key_padding_mask=x_pad, need_weights=False)[0]
        h = self.norm_cross(x)
        x = x + self.cross_attention(h, other, other, key_padding_mask=other_pad,
                                     need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))  # (B, N, W)


class CoAttentionFusion(nn.Module):
    """Image tokens (B, P, Dv) and text tokens (B, T, Dt) -> pooled (B, 2W)."""

    def __init__(self, image_width: int, text_width: int, params: FusionParams) -> None:
        super().__init__()
        width = params.width
        self.image_in, self.text_in = nn.Linear(image_width, width), nn.Linear(text_width, width)
        self.modality = nn.Embedding(2, width)  # 0: text, 1: image (METER's token type embedding)
        layer = (width, params.heads, params.mlp_ratio, params.dropout)
        self.text_layers = nn.ModuleList(CrossLayer(*layer) for _ in range(params.layers))
        self.image_layers = nn.ModuleList(CrossLayer(*layer) for _ in range(params.layers))
        self.text_norm, self.image_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.text_pool, self.image_pool = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, image: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        # image: (B, P, Dv); text: (B, T, Dt); text_mask: (B, T) True on real tokens
        x_text = self.text_in(text) + self.modality.weight[0]  # (B, T, W)
        x_image = self.image_in(image) + self.modality.weight[1]  # (B, P, W)
        text_pad = ~text_mask  # (B, T) True on padding, what attention masks out
        for text_layer, image_layer in zip(self.text_layers, self.image_layers, strict=True):
            # both streams read the other's previous output (co-attention, not one after the other)
            x_text, x_image = (text_layer(x_text, text_pad, x_image, None),
                               image_layer(x_image, None, x_text, text_pad))
        text_first = torch.tanh(self.text_pool(self.text_norm(x_text[:, 0])))  # (B, W)
        image_first = torch.tanh(self.image_pool(self.image_norm(x_image[:, 0])))  # (B, W)
        return torch.cat([text_first, image_first], dim=-1)  # (B, 2W)


class AnswerModel(nn.Module):
    """The fusion and METER's VQA classifier: tokens -> answer logits (B, A)."""

    def __init__(self, image_width: int, text_width: int, answers: int,
                 params: FusionParams) -> None:
        super().__init__()
        width = params.width
        self.fusion = CoAttentionFusion(image_width, text_width, params)
        self.head = nn.Sequential(nn.Linear(2 * width, 4 * width), nn.LayerNorm(4 * width),
                                  nn.GELU(), nn.Linear(4 * width, answers))

    def forward(self, image: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.fusion(image, text, text_mask))  # (B, A)


def new_answer_model(image_width: int, text_width: int, answers: int, params: FusionParams, *,
                     seed: int) -> AnswerModel:
    """An answer model whose initial weights depend on `seed` alone, drawn from torch's CPU
    generator seeded here and restored after. Drawn from the generator as the process left it, they
    changed from run to run: torch's seed before the first benchmark's model differed between two
    fresh processes, and the second benchmark's model followed the first's training, whose early
    stop decides how many numbers it drew (measured: SLAKE 0.737 and 0.705, VQA-RAD 0.638 and 0.685
    in two runs of the same stage on the same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return AnswerModel(image_width, text_width, answers, params)
