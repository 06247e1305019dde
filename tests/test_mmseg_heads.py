"""The drop-in text classifier, on the tiny random-weight CLIP (the ZSSeg head: tests/test_zsseg_head.py)."""
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from pomp_plugins.mmseg import TextConvSeg, set_vocabulary

register_all_modules()

CLASSES = ["sky", "grass", "road", "water", "snow"]
TEXT = dict(classes=CLASSES, split=dict(unseen=["water"]), hard_prompt="a photo of a", clip_model="pomp-tiny",
            clip_pretrained="none")


@pytest.mark.parametrize("stock, head_type", [("fcn_r50-d8.py", "FCNHead"), ("upernet_r50.py", "UPerHead")])
def test_drop_in_is_config_only_on_a_stock_mmseg_config(tmp_path, stock, head_type):
    stock_path = f"mmseg::_base_/models/{stock}"
    config = tmp_path / "drop_in.py"
    config.write_text(f"_base_ = [{stock_path!r}]\n"
                      f"model = dict(pretrained=None, decode_head=dict(type='TextClassifierHead', "
                      f"head_type={head_type!r}, text_classifier={TEXT!r}))\n")
    try:
        cfg = Config.fromfile(str(config))
    except FileNotFoundError:
        pytest.skip("this mmseg install does not ship its configs")
    stock_config = tmp_path / "stock.py"
    stock_config.write_text(f"_base_ = [{stock_path!r}]\nmodel = dict(pretrained=None)\n")
    stock_cfg = Config.fromfile(str(stock_config))
    model = MODELS.build(cfg.model).eval()
    assert isinstance(model.decode_head, MODELS.get(head_type))
    assert isinstance(model.decode_head.conv_seg, TextConvSeg)
    assert model.num_classes == model.out_channels == model.decode_head.out_channels == len(CLASSES)
    stock_keys = {k for k in MODELS.build(stock_cfg.model).state_dict() if not k.startswith("decode_head.conv_seg")}
    ours = set(model.state_dict())
    assert stock_keys <= ours and ours - stock_keys == {"decode_head.conv_seg.proj.weight",
                                                        "decode_head.conv_seg.proj.bias"}
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64), mode="tensor").shape[1] == len(CLASSES)
        set_vocabulary(model, ["sky", "grass", "lava"])  # a test-time vocabulary, with a class never trained on
        assert model.out_channels == 3 and model(torch.rand(1, 3, 64, 64), mode="tensor").shape[1] == 3


def test_drop_in_masks_unseen_logits_in_training_only():
    head = MODELS.build(dict(type="TextClassifierHead", head_type="FCNHead", in_channels=16, channels=8, num_convs=1,
                             concat_input=False, num_classes=150, text_classifier=dict(TEXT)))
    assert head.num_classes == 5  # from the classes, not the inherited 150
    x = [torch.randn(1, 16, 8, 8)]
    assert torch.isinf(head.train()(x)[:, 3]).all()
    assert torch.isfinite(head.eval()(x)).all()
    with pytest.raises(ValueError, match="out_channels must be 5"):
        MODELS.build(dict(type="TextClassifierHead", head_type="FCNHead", in_channels=16, channels=8,
                          out_channels=1, text_classifier=dict(TEXT)))
