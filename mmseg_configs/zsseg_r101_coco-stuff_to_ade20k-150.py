# Cross-dataset test: a ZSSeg model trained on COCO-Stuff (156 seen classes), tested on ADE20K-150 with ADE20K's
# vocabulary (plain mIoU). Use with tools/test.py and a checkpoint of zsseg_r101_coco-stuff-156-15_512x512_60k.py.
_base_ = [
    './_base_/models/zsseg_r101.py',
    './_base_/datasets/ade20k-150_test.py',
    './_base_/runtime.py',
]
model = dict(decode_head=dict(text_classifier=dict(classes='ade20k', split=None)))
