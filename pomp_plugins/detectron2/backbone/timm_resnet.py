"""Detic's ``build_p67_timm_fpn_backbone``: a timm ResNet as detectron2 ``Backbone`` + FPN with P6/P7 on P5.

Keys: ``bottom_up.base.{conv1,bn1,layer1..4,fc}.*`` (timm's ResNet, frozen BatchNorm), ``fpn_lateral3..5``,
``fpn_output3..5``, ``top_block.p6``, ``top_block.p7`` — Detic's. Features ``layer3..5`` (strides 8-32).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from timm.models.resnet import Bottleneck, ResNet
from torch import nn

from ..config import PompConfigError
from .fpn import p67_fpn

logger = logging.getLogger(__name__)

#: Detic's timm ResNet variants (``MODEL.TIMM.BASE_NAME``): the ImageNet-21K ResNet-50 is a plain ResNet-50.
RESNETS = {"resnet50_in21k": dict(block=Bottleneck, layers=[3, 4, 6, 3])}
_CHANNELS = {1: 64, 2: 256, 3: 512, 4: 1024, 5: 2048}  # Bottleneck ResNet output channels per level


class TimmResNet(Backbone):
    """timm ``ResNet`` -> ``{"layer<l>": feature}`` for ``out_levels`` ``l`` in 1..5 (stride ``2 ** l``).

    Level 1 is after the stem's max-pool (stride 4, as in Detic), levels 2-5 after ``layer1..4``."""

    def __init__(self, base_name: str, out_levels: Sequence[int], freeze_at: int = 0, norm: str = "FrozenBN"):
        super().__init__()
        if base_name not in RESNETS:
            raise PompConfigError(f"MODEL.TIMM.BASE_NAME {base_name!r}: only {sorted(RESNETS)} are implemented")
        self.base = ResNet(**RESNETS[base_name])
        # The ImageNet classifier is in Detic's checkpoints (so it stays) but never used: frozen, so that DDP
        # needs no find_unused_parameters and no optimizer step touches it.
        self.base.fc.requires_grad_(False)
        self.out_levels = tuple(out_levels)
        self._out_features = [f"layer{level}" for level in out_levels]
        self._out_feature_channels = {f"layer{level}": _CHANNELS[level] for level in out_levels}
        self._out_feature_strides = {f"layer{level}": 2**level for level in out_levels}  # as Detic (level 1: 2)
        if freeze_at >= 1:
            self.base.conv1 = _frozen(self.base.conv1)
        if freeze_at >= 2:
            self.base.layer1 = _frozen(self.base.layer1)
        if norm == "FrozenBN":
            FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        elif norm != "BN":
            raise PompConfigError(f"MODEL.TIMM.NORM {norm!r}: FrozenBN or BN")

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: ``[N, 3, H, W]`` -> the ``out_levels`` features."""
        base = self.base
        x = base.maxpool(base.act1(base.bn1(base.conv1(x))))
        levels = [x]
        for layer in (base.layer1, base.layer2, base.layer3, base.layer4):
            x = layer(x)
            levels.append(x)
        return {f"layer{level}": levels[level - 1] for level in self.out_levels}


def _frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad = False
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


@BACKBONE_REGISTRY.register()
def build_pomp_p67_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Detic's ``build_p67_timm_fpn_backbone`` (``MODEL.TIMM.*``, ``MODEL.FPN.*``)."""
    timm = cfg.MODEL.TIMM
    if timm.PRETRAINED:
        raise PompConfigError("MODEL.TIMM.PRETRAINED downloads weights; load them with MODEL.WEIGHTS instead")
    bottom_up = TimmResNet(timm.BASE_NAME, timm.OUT_LEVELS, freeze_at=timm.FREEZE_AT, norm=timm.NORM)
    return p67_fpn(cfg, bottom_up)
