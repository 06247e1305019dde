# ZSSeg with a POMP prompt on COCO-Stuff-164k, zero-shot 156/15: trained on the 156 seen classes, tested on all 171
# (mIoU of seen and unseen classes and their harmonic mean, hIoU). 8 GPUs x 4 images, 60k iterations.
# Mirrors POMP's zero_shot_maskformer_R101c_pomp_prompt_bs32_60k.yaml (ZSSeg's zero_shot_maskformer_R101c_bs32_60k
# with the prompt tuned by POMP's proposal-classification stage, frozen, for the head and the CLIP stage).
# Paper: POMP hIoU 39.1 (seen 39.9, unseen 38.2); ZSSeg 37.8.
_base_ = [
    "./_base_/models/zsseg_r101c.py",
    "./_base_/datasets/coco-stuff164k-156-15_640x640.py",
    "./_base_/runtime.py",
    "./_base_/schedule_zsseg.py",
]
model = dict(
    data_preprocessor=dict(size=(640, 640), size_divisor=None),
    decode_head=dict(
        clip_stage=dict(weight=0.8, mask_threshold=0.5),
        # the prompt tuned on COCO-Stuff's seen-class masks (tools/tune_prompt_seg.py), or a pre-trained POMP prompt
        text_classifier=dict(
            classes="coco-stuff", split="coco-stuff-156-15", prompt="prompts/pomp_vit_b16_ctx16_coco-stuff-156.pt"
        ),
    ),
)
