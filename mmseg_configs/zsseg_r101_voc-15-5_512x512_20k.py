# ZSSeg with a POMP prompt on Pascal VOC 2012 (20 classes, background ignored): trained on 15 seen classes,
# tested on all 20 (seen / unseen mIoU and hIoU). 8 GPUs x 2 images.
_base_ = [
    './_base_/models/zsseg_r101.py',
    './_base_/datasets/voc20_15-5.py',
    './_base_/runtime.py',
    './_base_/schedule_zsseg.py',
]
model = dict(decode_head=dict(text_classifier=dict(classes='voc', split='voc-15-5')))
max_iters = 20000
param_scheduler = [dict(type='PolyLR', eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=2000))
