# ZSSeg: ResNet-101 (v1c stem, ImageNet weights) + MaskFormer-style ZSSegHead with text-embedding classification.
# The top-level configs set model.decode_head.text_classifier (classes, split, prompt).
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=32)
model = dict(
    type='ZSSegEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://resnet101_v1c',
    backbone=dict(
        type='ResNetV1c',
        depth=101,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='ZSSegHead',
        in_channels=[256, 512, 1024, 2048],
        channels=256,
        num_queries=100,
        num_decoder_layers=6,
        num_heads=8,
        feedforward_channels=2048,
        decoder_dropout=0.1,
        class_weight=1.0,
        mask_weight=20.0,
        dice_weight=1.0,
        void_weight=0.1,
        deep_supervision=True,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        align_corners=False,
        # CLIP region classification at test time (ZSSeg's second stage); None to use the head alone.
        clip_stage=dict(weight=0.8, mask_threshold=0.5),
        text_classifier=dict(
            classes=None,  # set by each config
            split=None,
            prompt='pomp_vit_b16.pt',  # your POMP prompt file (ours or the released reference checkpoint)
            clip_model='ViT-B-16',
            clip_pretrained='openai',
            temperature=100.0)),  # ZSSeg's cosine logit scale
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
