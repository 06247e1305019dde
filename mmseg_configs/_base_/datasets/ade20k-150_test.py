# ADE20K-150 validation (2,000 images) for cross-dataset testing: mmseg's ade20k base (label 0 "other" ignored,
# shortest side 512 at most 2048 long, as ZSSeg's MIN_SIZE_TEST 512 / MAX_SIZE_TEST 2048); plain mIoU.
_base_ = "mmseg::_base_/datasets/ade20k.py"
val_evaluator = dict(_delete_=True, type="ZeroShotIoUMetric", split=None)
test_evaluator = val_evaluator
