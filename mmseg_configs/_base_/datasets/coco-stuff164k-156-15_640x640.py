# COCO-Stuff-164k (171 classes, mmseg's layout and converter) with ZSSeg's recipe at crop 640 and the zero-shot
# split 156/15: training ignores the 15 unseen classes' pixels; validation and test score all 171.
# ZSSeg (Base-COCOStuff164K-171.yaml): shortest side a random choice of 320, 384, ..., 960 (at most 2560 long),
# random 640x640 crop (no single-class area limit), random flip, SSD colour jitter; test at shortest side 640.
_base_ = "mmseg::_base_/datasets/coco-stuff164k.py"
split = "coco-stuff-156-15"
crop_size = (640, 640)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="IgnoreUnseenClasses", split=split),
    dict(
        type="RandomChoiceResize",
        scales=[int(640 * x * 0.1) for x in range(5, 16)],
        resize_type="ResizeShortestEdge",
        max_size=2560,
    ),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=1.0),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2560, 640), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type="ZeroShotIoUMetric", split=split)
test_evaluator = val_evaluator
