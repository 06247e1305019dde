"""The FPN Detic puts on all its backbones: detectron2's ``FPN`` with P6/P7 computed from P5."""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7


def p67_fpn(cfg: CfgNode, bottom_up: Backbone) -> FPN:
    """``bottom_up`` + FPN (``MODEL.FPN.*``) with P6/P7 on P5, as Detic's ``build_*_fpn_backbone`` builders."""
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
