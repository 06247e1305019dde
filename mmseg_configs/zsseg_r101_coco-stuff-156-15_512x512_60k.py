# ZSSeg with a POMP prompt on COCO-Stuff-164k: trained on the 156 seen classes, tested on all 171
# (reports mIoU of seen and unseen classes and their harmonic mean, hIoU). 8 GPUs x 4 images.
_base_ = [
    './_base_/models/zsseg_r101.py',
    './_base_/datasets/coco-stuff164k_156-15.py',
    './_base_/runtime.py',
    './_base_/schedule_zsseg.py',
]
model = dict(decode_head=dict(text_classifier=dict(classes='coco-stuff', split='coco-stuff-156-15')))
