# Cross-dataset test: a ZSSeg model trained on COCO-Stuff (156 seen classes), tested on Pascal Context-59 with its
# vocabulary (plain mIoU). Use with tools/test.py and a checkpoint of zsseg_r101_coco-stuff-156-15_512x512_60k.py.
_base_ = [
    './_base_/models/zsseg_r101.py',
    './_base_/datasets/pascal-context-59_test.py',
    './_base_/runtime.py',
]
model = dict(decode_head=dict(text_classifier=dict(classes='pascal-context', split=None)))
