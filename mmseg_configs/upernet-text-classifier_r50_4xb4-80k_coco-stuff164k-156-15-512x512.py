# Drop-in text classifier on mmseg's stock UPerNet (ResNet-50): the UPerHead and its auxiliary FCNHead are stock
# heads whose 1x1 conv_seg is replaced, through config alone, by a projection to CLIP's text space and cosine logits
# against POMP class embeddings (type='TextClassifierHead', head_type='UPerHead' / 'FCNHead'). Trained on
# COCO-Stuff's 156 seen classes (unseen pixels ignored, unseen logits masked), tested on all 171. mmseg's 80k
# schedule, 4 GPUs x 4 images. Every key but the two heads' type / head_type / text_classifier is mmseg's
# upernet_r50 model.
_base_ = [
    './_base_/datasets/coco-stuff164k_156-15.py',
    './_base_/runtime.py',
]
norm_cfg = dict(type='SyncBN', requires_grad=True)
text_classifier = dict(
    classes='coco-stuff',
    split='coco-stuff-156-15',
    prompt='pomp_vit_b16.pt',  # your POMP prompt file (ours, the released reference one, or a tuned one)
    clip_model='ViT-B-16',
    clip_pretrained='auto',
    temperature=50.0)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512)),
    pretrained='open-mmlab://resnet50_v1c',
    backbone=dict(
        type='ResNetV1c',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True),
    decode_head=dict(
        type='TextClassifierHead',
        head_type='UPerHead',
        text_classifier=text_classifier,
        in_channels=[256, 512, 1024, 2048],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=512,
        dropout_ratio=0.1,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='TextClassifierHead',
        head_type='FCNHead',
        text_classifier=text_classifier,
        in_channels=1024,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005), clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(interval=8000))
