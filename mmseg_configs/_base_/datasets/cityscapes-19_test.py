# Cityscapes-19 fine validation (500 images) for cross-dataset testing: mmseg's cityscapes base (shortest side 1024,
# at most 2048 long, as ZSSeg's MIN_SIZE_TEST 1024 / MAX_SIZE_TEST 2048); plain mIoU.
_base_ = "mmseg::_base_/datasets/cityscapes.py"
val_evaluator = dict(_delete_=True, type="ZeroShotIoUMetric", split=None)
test_evaluator = val_evaluator
