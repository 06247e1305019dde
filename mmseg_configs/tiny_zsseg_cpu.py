# A tiny ZSSeg that trains on CPU in seconds, on the synthetic dataset of pomp_plugins.mmseg.toy_data
# (`python -m pomp_plugins.mmseg.toy_data data/pomp_toy`): the real ZSSeg model config (_base_/models/zsseg_r101c.py:
# mmseg's MaskFormer parts, losses and assigner with ZSSeg's values) shrunk to a ResNet-18 at 1/8 width, a 2-layer
# decoder with 8 queries, and the random-weight `pomp-tiny` CLIP with the hard prompt "a photo of a" (no download).
# 5 classes; "water" is unseen (ignored in training, scored in testing). Used by the tests and the demo.
_base_ = ['./_base_/models/zsseg_r101c.py', './_base_/runtime.py']
data_root = 'data/pomp_toy'
classes = ('sky', 'grass', 'road', 'water', 'snow')
split = dict(unseen=['water'])
width = 32
attention = dict(embed_dims=width, num_heads=4, attn_drop=0.0, proj_drop=0.0)
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNetV1c',
        depth=18,
        stem_channels=16,
        base_channels=8,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1),
        strides=(1, 2, 2, 2),
        norm_cfg=dict(type='BN', requires_grad=True),
        style='pytorch'),
    decode_head=dict(
        in_channels=[8, 16, 32, 64],
        feat_channels=width,
        out_channels=width,
        num_queries=8,
        pixel_decoder=dict(norm_cfg=dict(type='GN', num_groups=8)),
        positional_encoding=dict(num_feats=width // 2),
        transformer_decoder=dict(
            num_layers=2,
            layer_cfg=dict(self_attn_cfg=attention, cross_attn_cfg=attention,
                           ffn_cfg=dict(embed_dims=width, feedforward_channels=64, ffn_drop=0.0))),
        class_embed=dict(hidden_channels=64),
        clip_stage=dict(weight=0.8, mask_threshold=0.5),
        text_classifier=dict(
            _delete_=True,
            classes=list(classes),
            split=split,
            hard_prompt='a photo of a',
            clip_model='pomp-tiny',
            clip_pretrained='none',
            temperature=100.0)))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_pipeline = (test_pipeline[:2] + [dict(type='IgnoreUnseenClasses', split=split, classes=list(classes))]
                  + test_pipeline[2:])
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
max_iters = 200
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
