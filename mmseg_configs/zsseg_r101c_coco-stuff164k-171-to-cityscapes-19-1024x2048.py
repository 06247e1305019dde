# Cross-dataset test: the COCO-Stuff-171 model (zsseg_r101c_8xb4-60k_coco-stuff164k-171-640x640.py) on cityscapes-19
# with that dataset's vocabulary (plain mIoU; no split: every class counts as unseen in the CLIP ensemble). Mirrors
# ZSSeg's cross_dataset_maskformer_R101c_bs32_test_only.yaml (ensemble weight 0.4, mask threshold 0.3; POMP reports no
# Cityscapes number).
_base_ = [
    "./_base_/models/zsseg_r101c.py",
    "./_base_/datasets/cityscapes-19_test.py",
    "./_base_/runtime.py",
]
model = dict(
    decode_head=dict(
        clip_stage=dict(weight=0.4, mask_threshold=0.3),
        text_classifier=dict(
            classes=dict(_delete_=True, dataset="CityscapesDataset"),
            split=None,
            prompt="prompts/pomp_vit_b16_ctx16_coco-stuff-156.pt",
        ),
    )
)
test_cfg = dict(type="TestLoop")
