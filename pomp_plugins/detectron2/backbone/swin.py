"""Detic's Swin Transformer backbone (``build_swintransformer_fpn_backbone``) from timm's Swin modules.

timm's ``WindowAttention``, ``Mlp``, ``PatchMerging`` and ``PatchEmbed`` compute what Detic's do; the block and stage
forwards are written here because Detic's differ from timm's on inputs that are not a multiple of the window (Detic
pads, then shifts, and builds the shift mask for the padded size; timm shifts, then pads) and because Detic puts each
stage's patch merging at the end of the stage (``layers.<i>.downsample``; timm: at the start of the next).
State-dict keys are Detic's: ``patch_embed.{proj,norm}``, ``layers.<i>.blocks.<j>.{norm1,attn.{qkv,proj,
relative_position_bias_table,relative_position_index},norm2,mlp.{fc1,fc2}}``, ``layers.<i>.downsample.{norm,
reduction}``, ``norm<i>`` for each output; FPN with P6/P7 on P5 as the timm ResNet's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from timm.models.swin_transformer import PatchMerging, WindowAttention, window_partition, window_reverse
from torch import nn

from ..config import PompConfigError
from .fpn import p67_fpn

#: Detic's ``size2config`` (``MODEL.SWIN.SIZE``): window, embedding width, depths, heads, stochastic depth.
SWIN_SIZES = {
    "T": dict(window_size=7, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "S": dict(window_size=7, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "B": dict(window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.3),
    "B-22k": dict(window_size=7, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.3),
    "B-22k-384": dict(
        window_size=12, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.3
    ),
    "L-22k": dict(window_size=7, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.3),
    "L-22k-384": dict(
        window_size=12, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), drop_path_rate=0.3
    ),
}


def _persistent_index(attn: WindowAttention) -> WindowAttention:
    """timm keeps ``relative_position_index`` out of the state dict; Detic's checkpoints hold it."""
    index = attn.relative_position_index
    del attn._buffers["relative_position_index"]
    attn.register_buffer("relative_position_index", index, persistent=True)
    return attn


def shift_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """The shifted-window attention mask ``[nW, window**2, window**2]`` (0 / -100) for a padded
    ``height x width`` map (multiples of ``window``)."""
    img_mask = torch.zeros((1, height, width, 1), device=device)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for count, (h, w) in enumerate((h, w) for h in slices for w in slices):
        img_mask[:, h, w, :] = count
    windows = window_partition(img_mask, (window, window)).view(-1, window * window)
    mask = windows.unsqueeze(1) - windows.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class SwinBlock(nn.Module):
    """One (shifted) window-attention block on ``[B, H, W, C]``; Detic's padding order."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, drop_path: float):
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _persistent_index(WindowAttention(dim, num_heads=num_heads, window_size=window_size))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=4 * dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        y = F.pad(self.norm1(x), (0, 0, 0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws))
        Hp, Wp = y.shape[1:3]
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = self.attn(
            window_partition(y, (ws, ws)).view(-1, ws * ws, C), mask=mask if self.shift_size > 0 else None
        )
        y = window_reverse(windows.view(-1, ws, ws, C), (ws, ws), Hp, Wp)
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x + self.drop_path(y[:, :H, :W, :])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Detic's ``BasicLayer``: blocks (alternately shifted), then the patch merging of the next stage."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, drop_path: Sequence[float], downsample: bool
    ):
        super().__init__()
        self.window_size, self.shift_size = window_size, window_size // 2
        self.blocks = nn.ModuleList(
            [
                SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, drop_path[i])
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, H, W, C]`` -> (stage output ``[B, H, W, C]``, input of the next stage)."""
        ws = self.window_size
        mask = shift_mask(
            math.ceil(x.shape[1] / ws) * ws, math.ceil(x.shape[2] / ws) * ws, ws, self.shift_size, x.device
        ).to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class SwinBackbone(Backbone):
    """Swin Transformer -> ``{"swin<i>": [B, C_i, H / 2**(i+2), W / 2**(i+2)]}`` for ``out_indices`` ``i``."""

    def __init__(
        self,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int = 7,
        drop_path_rate: float = 0.2,
        out_indices: Sequence[int] = (1, 2, 3),
        patch_size: int = 4,
    ):
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(
            img_size=None,
            patch_size=patch_size,
            embed_dim=embed_dim,
            norm_layer=nn.LayerNorm,
            output_fmt="NHWC",
            strict_img_size=False,
            dynamic_img_pad=True,
        )
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        self.layers = nn.ModuleList(
            [
                SwinStage(
                    embed_dim * 2**i,
                    depths[i],
                    num_heads[i],
                    window_size,
                    rates[sum(depths[:i]) : sum(depths[: i + 1])],
                    downsample=i < len(depths) - 1,
                )
                for i in range(len(depths))
            ]
        )
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self._out_features = [f"swin{i}" for i in self.out_indices]
        self._out_feature_channels = {f"swin{i}": self.num_features[i] for i in self.out_indices}
        self._out_feature_strides = {f"swin{i}": 2 ** (i + 2) for i in self.out_indices}
        self.apply(_init_weights)

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: ``[B, 3, H, W]``."""
        x = self.patch_embed(x)
        outs = {}
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            if i in self.out_indices:
                outs[f"swin{i}"] = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous()
        return outs


def _init_weights(m: nn.Module) -> None:
    """Detic's ``init_weights``: truncated normal (0.02) linears with zero bias, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


@BACKBONE_REGISTRY.register()
def build_pomp_swin_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Detic's ``build_swintransformer_fpn_backbone`` (``MODEL.SWIN.*``, ``MODEL.FPN.*``)."""
    if cfg.MODEL.SWIN.SIZE not in SWIN_SIZES:
        raise PompConfigError(f"MODEL.SWIN.SIZE {cfg.MODEL.SWIN.SIZE!r}: one of {', '.join(SWIN_SIZES)}")
    if cfg.MODEL.SWIN.USE_CHECKPOINT:
        raise PompConfigError("MODEL.SWIN.USE_CHECKPOINT (activation checkpointing) is not implemented")
    bottom_up = SwinBackbone(**SWIN_SIZES[cfg.MODEL.SWIN.SIZE], out_indices=cfg.MODEL.SWIN.OUT_FEATURES)
    return p67_fpn(cfg, bottom_up)
