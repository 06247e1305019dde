# ZSSeg with a POMP prompt trained on all 171 COCO-Stuff classes: the source model of POMP's cross-dataset results
# (coco-stuff-164k-171/zero_shot_maskformer_R101c_pomp_prompt_bs32_60k.yaml); test it on other datasets with the
# zsseg_r101c_coco-stuff164k-171-to-*.py configs. Paper: POMP mIoU 41.1 on COCO-Stuff.
_base_ = "./zsseg_r101c_8xb4-60k_coco-stuff164k-156-15-640x640.py"
train_dataloader = dict(
    dataset=dict(
        pipeline=[
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations"),
            dict(
                type="RandomChoiceResize",
                scales=[int(640 * x * 0.1) for x in range(5, 16)],
                resize_type="ResizeShortestEdge",
                max_size=2560,
            ),
            dict(type="RandomCrop", crop_size=(640, 640), cat_max_ratio=1.0),
            dict(type="RandomFlip", prob=0.5),
            dict(type="PhotoMetricDistortion"),
            dict(type="PackSegInputs"),
        ]
    )
)
# trained on all 171 classes; the CLIP ensemble still weighs the 15 unseen classes of the 156/15 split as unseen, as
# ZSSeg's COCO-Stuff test set (its trainable_flag) does
model = dict(decode_head=dict(text_classifier=dict(split=None), clip_stage=dict(split="coco-stuff-156-15")))
val_evaluator = dict(split=None)
test_evaluator = val_evaluator
