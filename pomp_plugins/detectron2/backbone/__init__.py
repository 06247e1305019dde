"""Detic's backbones with Detic's state-dict keys, registered under this plugin's names:
``build_pomp_p67_timm_fpn_backbone`` (timm ResNet-50, e.g. the ImageNet-21K one, + FPN with P6/P7 on P5) and
``build_pomp_swin_fpn_backbone`` (Swin Transformer + FPN)."""

from .swin import SwinBackbone, build_pomp_swin_fpn_backbone
from .timm_resnet import TimmResNet, build_pomp_p67_timm_fpn_backbone

__all__ = ["SwinBackbone", "build_pomp_swin_fpn_backbone", "TimmResNet", "build_pomp_p67_timm_fpn_backbone"]
