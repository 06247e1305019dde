# Cross-dataset test: the COCO-Stuff-171 model (zsseg_r101c_8xb4-60k_coco-stuff164k-171-640x640.py) on pascal-context-59
# with that dataset's vocabulary (plain mIoU; no split: every class counts as unseen in the CLIP ensemble). Mirrors
# POMP's pcontext-59/cross_dataset_pomp_prompt_test_only.yaml (ensemble weight 0.2, mask threshold 0.5). Paper: POMP
# mIoU 51.1.
_base_ = [
    "./_base_/models/zsseg_r101c.py",
    "./_base_/datasets/pascal-context-59_test.py",
    "./_base_/runtime.py",
]
model = dict(
    decode_head=dict(
        clip_stage=dict(weight=0.2, mask_threshold=0.5),
        text_classifier=dict(
            classes="pascal-context", split=None, prompt="prompts/pomp_vit_b16_ctx16_coco-stuff-156.pt"
        ),
    )
)
test_cfg = dict(type="TestLoop")
