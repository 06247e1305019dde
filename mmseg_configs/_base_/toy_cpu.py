# The synthetic dataset of pomp_plugins.mmseg.toy_data (`python -m pomp_plugins.mmseg.toy_data data/pomp_toy`:
# 64x64 images, 5 classes, "water" unseen: ignored in training, scored in testing), with a CPU runtime and a short
# AdamW schedule: what the tiny configs share. They read the classes and split as {{_base_.classes}} /
# {{_base_.split}} for their text classifiers.
_base_ = ["./runtime.py"]
data_root = "data/pomp_toy"
classes = ("sky", "grass", "road", "water", "snow")
split = dict(unseen=["water"])

test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_pipeline = [
    *test_pipeline[:2],
    dict(type="IgnoreUnseenClasses", split=split, classes=list(classes)),
    *test_pipeline[2:],
]
dataset = dict(
    type="BaseSegDataset", data_root=data_root, metainfo=dict(classes=classes), img_suffix=".png", seg_map_suffix=".png"
)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        dataset, data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"), pipeline=train_pipeline
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(dataset, data_prefix=dict(img_path="img_dir/val", seg_map_path="ann_dir/val"), pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="ZeroShotIoUMetric", split=split)
test_evaluator = val_evaluator

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=1e-4))
max_iters = 200
param_scheduler = [dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_iters))
randomness = dict(seed=0)
