# Cross-dataset test: the COCO-Stuff-171 model (zsseg_r101c_8xb4-60k_coco-stuff164k-171-640x640.py) on ade20k-150 with
# that dataset's vocabulary (plain mIoU; no split: every class counts as unseen in the CLIP ensemble). Mirrors POMP's
# ade20k-150/cross_dataset_pomp_prompt_test_only.yaml (ensemble weight 0.5, mask threshold 0.4). Paper: POMP mIoU 20.7.
_base_ = [
    "./_base_/models/zsseg_r101c.py",
    "./_base_/datasets/ade20k-150_test.py",
    "./_base_/runtime.py",
]
model = dict(
    decode_head=dict(
        clip_stage=dict(weight=0.5, mask_threshold=0.4),
        text_classifier=dict(classes="ade20k", split=None, prompt="prompts/pomp_vit_b16_ctx16_coco-stuff-156.pt"),
    )
)
test_cfg = dict(type="TestLoop")
