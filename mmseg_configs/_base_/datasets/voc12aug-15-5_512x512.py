# Pascal VOC 2012 + SBD, the 10,582-image augmented training set (mmseg's pascal_voc12_aug: VOC train.txt 1,464 +
# aug.txt 9,118 from tools/dataset_converters/voc_aug.py), background ignored (20 classes: the dataset's label map
# sends background to 255 and shifts the rest down by one), zero-shot 15/5; val: VOC 2012 val (1,449 images).
# ZSSeg (Base-VOC11K-20.yaml): shortest side a random choice of 320, 384, ..., 960 (at most 2048 long), random
# 512x512 crop, random flip, SSD colour jitter; test at shortest side 512 (at most 2048).
_base_ = "mmseg::_base_/datasets/pascal_voc12_aug.py"
split = "voc-15-5"
classes = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
crop_size = (512, 512)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="IgnoreUnseenClasses", split=split),
    dict(
        type="RandomChoiceResize",
        scales=[int(640 * x * 0.1) for x in range(5, 16)],
        resize_type="ResizeShortestEdge",
        max_size=2048,
    ),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=1.0),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
voc_train = dict(
    type="PascalVOCDataset",
    data_root="data/VOCdevkit/VOC2012",
    metainfo=dict(classes=classes),
    data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
    ann_file="ImageSets/Segmentation/train.txt",
    pipeline=train_pipeline,
)
sbd_aug = dict(
    voc_train,
    data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClassAug"),
    ann_file="ImageSets/Segmentation/aug.txt",
)
train_dataloader = dict(batch_size=2, dataset=dict(_delete_=True, type="ConcatDataset", datasets=[voc_train, sbd_aug]))
val_dataloader = dict(dataset=dict(metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type="ZeroShotIoUMetric", split=split)
test_evaluator = val_evaluator
