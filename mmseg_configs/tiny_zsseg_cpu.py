# A tiny ZSSeg that trains on CPU in seconds, on the synthetic dataset of pomp_plugins.mmseg.toy_data
# (`python -m pomp_plugins.mmseg.toy_data data/pomp_toy`): the real ZSSeg model config (_base_/models/zsseg_r101c.py:
# mmseg's MaskFormer parts, losses and assigner with ZSSeg's values) shrunk to a ResNet-18 at 1/8 width, a 2-layer
# decoder with 8 queries, and the random-weight `pomp-tiny` CLIP with the hard prompt "a photo of a" (no download).
# 5 classes; "water" is unseen (ignored in training, scored in testing). Used by the tests and the demo.
_base_ = ["./_base_/models/zsseg_r101c.py", "./_base_/toy_cpu.py"]
width = 32
attention = dict(embed_dims=width, num_heads=4, attn_drop=0.0, proj_drop=0.0)
model = dict(
    backbone=dict(
        _delete_=True,
        type="ResNetV1c",
        depth=18,
        stem_channels=16,
        base_channels=8,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=dict(type="BN", requires_grad=True),
        style="pytorch",
    ),
    decode_head=dict(
        in_channels=[8, 16, 32, 64],
        feat_channels=width,
        out_channels=width,
        num_queries=8,
        pixel_decoder=dict(norm_cfg=dict(type="GN", num_groups=8)),
        positional_encoding=dict(num_feats=width // 2),
        transformer_decoder=dict(
            num_layers=2,
            layer_cfg=dict(
                self_attn_cfg=attention,
                cross_attn_cfg=attention,
                ffn_cfg=dict(embed_dims=width, feedforward_channels=64, ffn_drop=0.0),
            ),
        ),
        class_embed=dict(hidden_channels=64),
        clip_stage=dict(weight=0.8, mask_threshold=0.5),
        text_classifier=dict(
            _delete_=True,
            classes={{_base_.classes}},
            split={{_base_.split}},
            hard_prompt="a photo of a",
            clip_model="pomp-tiny",
            clip_pretrained="none",
            temperature=100.0,
        ),
    ),
)
