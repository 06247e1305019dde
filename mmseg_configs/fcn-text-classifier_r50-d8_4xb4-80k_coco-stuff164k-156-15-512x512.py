# Drop-in text classifier on mmseg's stock FCN (ResNet-50-D8, mmseg's own model base): the decode and auxiliary
# heads are ordinary FCNHeads whose 1x1 conv_seg is replaced, through config alone, by a projection to CLIP's text
# space and cosine logits against POMP class embeddings (type='TextClassifierHead', head_type='FCNHead'). Trained on
# COCO-Stuff's 156 seen classes (unseen pixels ignored, unseen logits masked), tested on all 171. The same keys turn
# any head with a conv_seg (UPerHead, PSPHead, ASPPHead...) open-vocabulary. mmseg's 80k schedule, 4 GPUs x 4 images.
_base_ = [
    "mmseg::_base_/models/fcn_r50-d8.py",
    "./_base_/datasets/coco-stuff164k_156-15.py",
    "./_base_/runtime.py",
]
crop_size = (512, 512)
text_classifier = dict(
    classes="coco-stuff",
    split="coco-stuff-156-15",
    prompt="prompts/pomp_vit_b16_ctx16.pt",  # a POMP prompt file (see the README: Prompt files)
    clip_model="ViT-B-16",
    clip_pretrained="auto",
    temperature=50.0,
)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(type="TextClassifierHead", head_type="FCNHead", text_classifier=text_classifier, num_classes=171),
    auxiliary_head=dict(
        type="TextClassifierHead", head_type="FCNHead", text_classifier=text_classifier, num_classes=171
    ),
)
optim_wrapper = dict(
    type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0005), clip_grad=None
)
param_scheduler = [dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=0, end=80000, by_epoch=False)]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=8000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(checkpoint=dict(interval=8000))
