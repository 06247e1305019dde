# ZSSeg with a POMP prompt on Pascal VOC 2012 + SBD (10,582 training images), background ignored, zero-shot 15/5:
# trained on 15 seen classes, tested on all 20 of VOC 2012 val (seen / unseen mIoU and hIoU). 8 GPUs x 2 images, 20k
# iterations. Mirrors POMP's voc-11k-15/zero_shot_maskformer_R101c_pomp_prompt_bs16_20k.yaml (CLIP ensemble weight
# 0.7, one prompt for the head and the CLIP stage).
# Paper: POMP hIoU 84.4 (seen 93.6, unseen 76.8); ZSSeg 77.5.
_base_ = [
    "./_base_/models/zsseg_r101c.py",
    "./_base_/datasets/voc12aug-15-5_512x512.py",
    "./_base_/runtime.py",
    "./_base_/schedule_zsseg.py",
]
model = dict(
    data_preprocessor=dict(size=(512, 512), size_divisor=None),
    decode_head=dict(
        clip_stage=dict(weight=0.7, mask_threshold=0.5),
        # the prompt tuned on VOC's seen-class masks (tools/tune_prompt_seg.py), or a pre-trained POMP prompt
        text_classifier=dict(classes="voc", split="voc-15-5", prompt="prompts/pomp_vit_b16_ctx16_voc-15.pt"),
    ),
)
max_iters = 20000
param_scheduler = [dict(type="PolyLR", eta_min=0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters)
