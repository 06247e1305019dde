"""MaskFormer's transformer decoder: learned queries attending to one feature map, built from mmcv's DETR-style
layers (post-norm: self-attention, cross-attention, FFN, each followed by LayerNorm)."""
from __future__ import annotations

import math

import torch
from mmcv.cnn.bricks.transformer import BaseTransformerLayer
from torch import nn


def sine_position_encoding(height: int, width: int, channels: int, device: torch.device,
                           temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding: ``[height * width, channels]`` float32, row-major like ``flatten(2)``.

    Half of the channels encode y, half x, each as interleaved sin/cos of ``pos / temperature**(2i/d)`` with
    positions normalised to ``(0, 2*pi]``.
    """
    if channels % 4:
        raise ValueError(f"sine position encoding needs channels divisible by 4, got {channels}")
    half = channels // 2
    eps = 1e-6
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * 2 * math.pi
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * 2 * math.pi
    freq = temperature ** (2 * (torch.arange(half, device=device) // 2) / half)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] / freq
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, half)
    pos_x = encode(x)[None, :, :].expand(height, width, half)
    return torch.cat((pos_y, pos_x), dim=2).reshape(height * width, channels)


class QueryDecoder(nn.Module):
    """``num_layers`` DETR decoder layers over ``num_queries`` learned queries; returns every layer's output.

    Args:
        channels: width of the queries and of the memory.
        num_queries, num_layers, num_heads, feedforward_channels, dropout: the usual transformer sizes.
    """

    def __init__(self, channels: int, num_queries: int = 100, num_layers: int = 6, num_heads: int = 8,
                 feedforward_channels: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.query_pos = nn.Embedding(num_queries, channels)
        layer = dict(
            attn_cfgs=dict(type="MultiheadAttention", embed_dims=channels, num_heads=num_heads, attn_drop=dropout,
                           proj_drop=dropout),
            ffn_cfgs=dict(type="FFN", embed_dims=channels, feedforward_channels=feedforward_channels,
                          ffn_drop=dropout, act_cfg=dict(type="ReLU", inplace=True)),
            operation_order=("self_attn", "norm", "cross_attn", "norm", "ffn", "norm"),
            batch_first=True,
        )
        self.layers = nn.ModuleList(BaseTransformerLayer(**layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(channels)

    @property
    def num_queries(self) -> int:
        return self.query_pos.num_embeddings

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """``memory`` ``[B, C, H, W]`` -> query features ``[num_layers, B, Q, C]`` (each after the final norm)."""
        batch, channels, height, width = memory.shape
        key = memory.flatten(2).transpose(1, 2)
        key_pos = sine_position_encoding(height, width, channels, memory.device).to(key.dtype)
        key_pos = key_pos.expand(batch, -1, -1)
        query_pos = self.query_pos.weight.to(key.dtype).expand(batch, -1, -1)
        query = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.layers:
            query = layer(query, key, key, query_pos=query_pos, key_pos=key_pos)
            outputs.append(self.norm(query))
        return torch.stack(outputs)
