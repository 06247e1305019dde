# The drop-in text classifier at CPU size, on the synthetic dataset of pomp_plugins.mmseg.toy_data
# (`python -m pomp_plugins.mmseg.toy_data data/pomp_toy`): a stock mmseg EncoderDecoder with a 1/8-width
# ResNet-18 (dilated, output stride 8) and a stock FCNHead whose conv_seg is a text classifier
# (type='TextClassifierHead', head_type='FCNHead'), over the random-weight `pomp-tiny` CLIP with the hard prompt
# "a photo of a" (no download needed). 5 classes; "water" is unseen (ignored in training, scored in testing).
# Trains in seconds; used by the tests of mmseg's own entry points.
_base_ = ['./_base_/runtime.py']
data_root = 'data/pomp_toy'
classes = ('sky', 'grass', 'road', 'water', 'snow')
split = dict(unseen=['water'])
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size_divisor=8),
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=16,
        base_channels=8,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        contract_dilation=True,
        style='pytorch'),
    decode_head=dict(
        type='TextClassifierHead',
        head_type='FCNHead',
        text_classifier=dict(
            classes=list(classes),
            split=split,
            hard_prompt='a photo of a',
            clip_model='pomp-tiny',
            clip_pretrained='none',
            temperature=50.0),
        in_channels=64,
        in_index=3,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.0,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_pipeline = [*test_pipeline[:2], dict(type='IgnoreUnseenClasses', split=split, classes=list(classes)),
                  *test_pipeline[2:]]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=dict(classes=classes), img_suffix='.png',
               seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(dataset, data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='ZeroShotIoUMetric', split=split)
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4))
max_iters = 100
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
