# The drop-in text classifier at CPU size, on the synthetic dataset of pomp_plugins.mmseg.toy_data
# (`python -m pomp_plugins.mmseg.toy_data data/pomp_toy`): a stock mmseg EncoderDecoder with a 1/8-width
# ResNet-18 (dilated, output stride 8) and a stock FCNHead whose conv_seg is a text classifier
# (type='TextClassifierHead', head_type='FCNHead'), over the random-weight `pomp-tiny` CLIP with the hard prompt
# "a photo of a" (no download needed). 5 classes; "water" is unseen (ignored in training, scored in testing).
# Trains in seconds; used by the tests of mmseg's own entry points.
_base_ = ["./_base_/toy_cpu.py"]
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size_divisor=8,
    ),
    backbone=dict(
        type="ResNetV1c",
        depth=18,
        stem_channels=16,
        base_channels=8,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        contract_dilation=True,
        style="pytorch",
    ),
    decode_head=dict(
        type="TextClassifierHead",
        head_type="FCNHead",
        text_classifier=dict(
            classes={{_base_.classes}},
            split={{_base_.split}},
            hard_prompt="a photo of a",
            clip_model="pomp-tiny",
            clip_pretrained="none",
            temperature=50.0,
        ),
        in_channels=64,
        in_index=3,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.0,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
max_iters = 100
param_scheduler = [dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
