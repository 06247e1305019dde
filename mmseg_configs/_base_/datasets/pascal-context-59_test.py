# Pascal Context-59 validation (5,105 images) for cross-dataset testing: mmseg's pascal_context_59 base (label 0
# "background" ignored), resized as ZSSeg tests it (shortest side 512, at most 2048 long); plain mIoU.
_base_ = "mmseg::_base_/datasets/pascal_context_59.py"
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadAnnotations", reduce_zero_label=True),
    dict(type="PackSegInputs"),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type="ZeroShotIoUMetric", split=None)
test_evaluator = val_evaluator
