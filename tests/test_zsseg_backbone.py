"""ZSSeg's "R101c" is mmseg's ResNetV1c as configured in _base_/models/zsseg_r101c.py: detectron2's DeepLab ResNet-101
(the DeepLab stem of ZSSeg's build_resnet_deeplab_backbone, written out here with detectron2's layers; res5 multi-grid
[1, 2, 4]; FrozenBN) with its weights renamed by pomp_plugins.mmseg.backbone_weights gives the same features."""

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from pomp_plugins.mmseg.backbone_weights import convert_state_dict, main, mmseg_name

detectron2 = pytest.importorskip("detectron2")
from detectron2.layers import Conv2d, get_norm  # noqa: E402
from detectron2.modeling.backbone.resnet import BottleneckBlock, ResNet  # noqa: E402

register_all_modules()
ROOT = Path(__file__).resolve().parent.parent


class DeepLabStem(torch.nn.Module):
    """detectron2 projects/DeepLab: 3x3 convs 3 -> 64 (stride 2), 64 -> 64, 64 -> 128, FrozenBN, ReLU; max pool."""

    def __init__(self, out_channels=128):
        super().__init__()
        self.out_channels, self.stride = out_channels, 4
        half = out_channels // 2
        self.conv1 = Conv2d(3, half, 3, stride=2, padding=1, bias=False, norm=get_norm("FrozenBN", half))
        self.conv2 = Conv2d(half, half, 3, stride=1, padding=1, bias=False, norm=get_norm("FrozenBN", half))
        self.conv3 = Conv2d(
            half, out_channels, 3, stride=1, padding=1, bias=False, norm=get_norm("FrozenBN", out_channels)
        )

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def detectron2_r101c() -> ResNet:
    """build_resnet_deeplab_backbone with ZSSeg's R101c keys (DEPTH 101, STEM_OUT_CHANNELS 128, STRIDE_IN_1X1 False,
    RES5_MULTI_GRID [1, 2, 4], RES5_DILATION 1, NORM FrozenBN)."""
    stages, in_channels, out_channels, bottleneck = [], 128, 256, 64
    for index, blocks in enumerate((3, 4, 23, 3)):
        dilations = [1, 2, 4] if index == 3 else [1] * blocks
        stages.append(
            ResNet.make_stage(
                BottleneckBlock,
                blocks,
                in_channels=in_channels,
                out_channels=out_channels,
                bottleneck_channels=bottleneck,
                stride_in_1x1=False,
                norm="FrozenBN",
                dilation_per_block=dilations,
                stride_per_block=[1 if index == 0 else 2] + [1] * (blocks - 1),
            )
        )
        in_channels, out_channels, bottleneck = out_channels, out_channels * 2, bottleneck * 2
    return ResNet(DeepLabStem(), stages, out_features=["res2", "res3", "res4", "res5"]).eval()


def test_mmseg_resnetv1c_with_converted_weights_is_zssegs_r101c(tmp_path):
    torch.manual_seed(0)
    reference = detectron2_r101c()
    state = {}
    for name, tensor in reference.state_dict().items():  # FrozenBN buffers: random statistics and affine
        state[name] = torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.1
    reference.load_state_dict(state)
    checkpoint = tmp_path / "R-103.pkl"
    with open(checkpoint, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, f)
    assert main([str(checkpoint), str(tmp_path / "r101c.pth")]) == 0

    config = Config.fromfile(str(ROOT / "mmseg_configs" / "_base_" / "models" / "zsseg_r101c.py"))
    backbone = MODELS.build(config.model.backbone)
    missing, unexpected = backbone.load_state_dict(torch.load(tmp_path / "r101c.pth")["state_dict"], strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    backbone.train()  # norm_eval: BN stays in eval mode, as FrozenBN
    assert not any(p.requires_grad for n, p in backbone.named_parameters() if ".bn" in n or "stem.1" in n)
    assert [m.dilation for m in (backbone.layer4[i].conv2 for i in range(3))] == [(1, 1), (2, 2), (4, 4)]
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = backbone(image)
        expected = reference(image)
    for level, name in enumerate(("res2", "res3", "res4", "res5")):
        torch.testing.assert_close(ours[level], expected[name], rtol=1e-4, atol=1e-4)


def test_names_that_are_not_a_deeplab_resnet_are_refused():
    assert mmseg_name("res2.0.shortcut.norm.running_mean") == "layer1.0.downsample.1.running_mean"
    assert mmseg_name("stem.conv3.norm.bias") == "stem.7.bias"
    assert set(convert_state_dict({"backbone.stem.conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)})) == {
        "stem.0.weight"
    }
    with pytest.raises(KeyError, match="sem_seg_head.predictor"):
        convert_state_dict({"sem_seg_head.predictor.query_embed.weight": torch.zeros(1)})
