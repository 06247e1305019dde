"""The config keys of the POMP detectron2 plugin: Detic's keys (same names, same defaults), CenterNet2's, and the
``MODEL.POMP`` keys that say where the classifier's text embeddings come from.

Call ``add_pomp_config(cfg)`` on a fresh ``get_cfg()`` before ``merge_from_file``, as with any detectron2 project.
A Detic config merges unchanged; what it builds depends only on the registered names it uses (``PompRCNN`` for
``CustomRCNN`` etc., see ``DETIC_NAMES``) and on ``MODEL.POMP.VOCABULARY`` (set: the classifier is the POMP prompt's
embeddings of those names; empty: Detic's ``MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH`` .npy).
"""

from __future__ import annotations

from centernet.config import add_centernet_config
from detectron2.config import CfgNode as CN

#: Detic's registered names -> this plugin's (detectron2 registries refuse a name twice, so ours differ).
DETIC_NAMES = {
    "CustomRCNN": "PompRCNN",
    "DeticCascadeROIHeads": "PompCascadeROIHeads",
    "CustomRes5ROIHeads": "PompRes5ROIHeads",
    "build_p67_timm_fpn_backbone": "build_pomp_p67_timm_fpn_backbone",
    "build_swintransformer_fpn_backbone": "build_pomp_swin_fpn_backbone",
}


#: detectron2's ROI heads -> the same kind with Detic's box predictor (with ``USE_ZEROSHOT_CLS``).
STOCK_ROI_HEADS = {
    "StandardROIHeads": "PompStandardROIHeads",
    "CascadeROIHeads": "PompCascadeROIHeads",
    "Res5ROIHeads": "PompRes5ROIHeads",
}


class PompConfigError(ValueError):
    """A config that cannot build a working model: it names the keys involved and what they must be."""


def use_pomp_names(cfg: CN) -> CN:
    """``cfg`` (merged) with Detic's registered meta-architecture, ROI heads and backbone names replaced by this
    plugin's equivalents (``DETIC_NAMES``), and with ``USE_ZEROSHOT_CLS`` detectron2's stock ROI heads by the same kind
    with Detic's box predictor (``STOCK_ROI_HEADS``); a copy, ``cfg`` is left as it is."""
    cfg = cfg.clone()
    cfg.defrost()
    if cfg.MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS:  # a stock model with the zero-shot classifier keeps its heads' kind
        cfg.MODEL.ROI_HEADS.NAME = STOCK_ROI_HEADS.get(cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.ROI_HEADS.NAME)
    for node, key in ((cfg.MODEL, "META_ARCHITECTURE"), (cfg.MODEL.ROI_HEADS, "NAME"), (cfg.MODEL.BACKBONE, "NAME")):
        node[key] = DETIC_NAMES.get(node[key], node[key])
    return cfg


def add_pomp_config(cfg: CN) -> None:
    """Declare every key of the plugin on ``cfg`` with its default: CenterNet2's (``add_centernet_config``), then
    Detic's (``add_detic_config``, the same names and defaults), then ``MODEL.POMP``."""
    if not hasattr(cfg.MODEL, "CENTERNET"):
        add_centernet_config(cfg)
    _add_detic_keys(cfg)
    _add_pomp_keys(cfg)


def _add_pomp_keys(cfg: CN) -> None:
    _C = cfg
    _C.MODEL.POMP = CN()
    # --- Where the classifier comes from ------------------------------------------------------------------------
    # Training classes encoded with the POMP prompt: a vocabulary name (lvis, coco, objects365, ...), a names file
    # (.txt, one name per line, or a .json list) or comma-separated names, in the training dataset's category order.
    # "" = Detic's MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH (.npy [C, D], or "rand").
    _C.MODEL.POMP.VOCABULARY = ""
    # Inference classes, in the same forms; "" = the training classifier (as Detic). Per test set: see
    # TEST_VOCABULARIES (and Detic's MODEL.RESET_CLS_TESTS / TEST_CLASSIFIERS).
    _C.MODEL.POMP.TEST_VOCABULARY = ""
    # With MODEL.RESET_CLS_TESTS: one entry per DATASETS.TEST, a vocabulary encoded with the prompt; an entry ""
    # uses Detic's MODEL.TEST_CLASSIFIERS entry (.npy) instead.
    _C.MODEL.POMP.TEST_VOCABULARIES = []
    # POMP prompt file (ours, or the reference {"state_dict": {"ctx": ...}} checkpoint); "" = use HARD_PROMPT.
    _C.MODEL.POMP.PROMPT = ""
    # The fixed phrase put before each class name when PROMPT and TEMPLATES are "" (the CLIP zero-shot baseline).
    _C.MODEL.POMP.HARD_PROMPT = "a"
    # A template ensemble instead of a prompt (the hard-prompt baselines): "imagenet80" (CLIP's 80 ImageNet
    # templates) or "vild" (ViLD's 14); "" = none. Exclusive with PROMPT.
    _C.MODEL.POMP.TEMPLATES = ""
    # open_clip model of the text encoder; "" = the model the prompt file names, else ViT-B-16.
    _C.MODEL.POMP.CLIP_MODEL = ""
    # Its weights: "auto" (those the prompt file records, else openai), an open_clip tag (openai, ...), a local
    # weights file, or "none" for random weights (tests).
    _C.MODEL.POMP.CLIP_PRETRAINED = "auto"
    # Device that encodes the class names at build time; "" = MODEL.DEVICE.
    _C.MODEL.POMP.TEXT_DEVICE = ""

    # --- Datasets from paths (data.py) ---------------------------------------------------------------------------
    # Datasets to register, one entry per name:
    #   NAME: {FORMAT: lvis | lvis-base | coco | image-labels, JSON: path/to/annotations.json, IMAGE_ROOT: dir}
    _C.DATASETS.REGISTER = CN(new_allowed=True)


def _add_detic_keys(cfg: CN) -> None:
    """Detic's ``add_detic_config`` (2022-12): every key, its default. The ones this plugin does not implement are
    declared too, so that Detic's configs merge; building a model that turns them on raises ``PompConfigError``."""
    _C = cfg
    _C.WITH_IMAGE_LABELS = False  # co-training with image-labelled data

    # Open-vocabulary classifier
    _C.MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS = False
    _C.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH = "datasets/metadata/lvis_v1_clip_a+cname.npy"
    _C.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM = 512
    _C.MODEL.ROI_BOX_HEAD.NORM_WEIGHT = True
    _C.MODEL.ROI_BOX_HEAD.NORM_TEMP = 50.0
    _C.MODEL.ROI_BOX_HEAD.IGNORE_ZERO_CATS = False
    _C.MODEL.ROI_BOX_HEAD.USE_BIAS = 0.0  # >= 0: no bias; < 0: a learned bias initialised to it

    _C.MODEL.ROI_BOX_HEAD.MULT_PROPOSAL_SCORE = False  # score = sqrt(cls score x proposal score)
    _C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
    _C.MODEL.ROI_BOX_HEAD.PRIOR_PROB = 0.01
    _C.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
    # Per-class image counts ([{"id", "image_count"}, ...], full training set): federated-loss weights.
    _C.MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH = "datasets/metadata/lvis_v1_train_cat_info.json"
    _C.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CAT = 50
    _C.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT = 0.5

    # Image-labelled data
    _C.MODEL.ROI_BOX_HEAD.IMAGE_LABEL_LOSS = "max_size"  # only max_size is implemented here
    _C.MODEL.ROI_BOX_HEAD.IMAGE_LOSS_WEIGHT = 0.1
    _C.MODEL.ROI_BOX_HEAD.IMAGE_BOX_SIZE = 1.0
    _C.MODEL.ROI_BOX_HEAD.ADD_IMAGE_BOX = False  # not implemented (caption loss)
    _C.MODEL.ROI_BOX_HEAD.WS_NUM_PROPS = 128  # proposals of an image-labelled image
    _C.MODEL.ROI_BOX_HEAD.WITH_SOFTMAX_PROP = False  # not implemented (WSDDN)
    _C.MODEL.ROI_BOX_HEAD.CAPTION_WEIGHT = 1.0
    _C.MODEL.ROI_BOX_HEAD.NEG_CAP_WEIGHT = 0.125
    _C.MODEL.ROI_BOX_HEAD.ADD_FEATURE_TO_PROP = False  # not implemented (WSDDN)
    _C.MODEL.ROI_BOX_HEAD.SOFTMAX_WEAK_LOSS = False

    _C.MODEL.ROI_HEADS.MASK_WEIGHT = 1.0
    _C.MODEL.ROI_HEADS.ONE_CLASS_PER_PROPOSAL = False

    # Caption losses (not implemented)
    _C.MODEL.CAP_BATCH_RATIO = 4
    _C.MODEL.WITH_CAPTION = False
    _C.MODEL.SYNC_CAPTION_BATCH = False

    # Dynamic class sampling with 21K classes (not implemented)
    _C.MODEL.DYNAMIC_CLASSIFIER = False
    _C.MODEL.NUM_SAMPLE_CATS = 50

    # Another classifier per test set (cross-dataset evaluation)
    _C.MODEL.RESET_CLS_TESTS = False
    _C.MODEL.TEST_CLASSIFIERS = []
    _C.MODEL.TEST_NUM_CLASSES = []

    # Backbones
    _C.MODEL.SWIN = CN()
    _C.MODEL.SWIN.SIZE = "T"  # T, S, B, B-22k, L-22k
    _C.MODEL.SWIN.USE_CHECKPOINT = False
    _C.MODEL.SWIN.OUT_FEATURES = (1, 2, 3)  # FPN stride 8 - 32

    _C.MODEL.TIMM = CN()
    _C.MODEL.TIMM.BASE_NAME = "resnet50"
    _C.MODEL.TIMM.OUT_LEVELS = (3, 4, 5)
    _C.MODEL.TIMM.NORM = "FrozenBN"
    _C.MODEL.TIMM.FREEZE_AT = 0
    _C.MODEL.TIMM.PRETRAINED = False
    _C.MODEL.DATASET_LOSS_WEIGHT = []

    # Multi-dataset data loader (implemented in data.py / loader.py)
    _C.DATALOADER.DATASET_RATIO = [1, 1]
    _C.DATALOADER.USE_RFS = [False, False]
    _C.DATALOADER.MULTI_DATASET_GROUPING = False
    _C.DATALOADER.DATASET_ANN = ["box", "box"]
    _C.DATALOADER.USE_DIFF_BS_SIZE = False
    _C.DATALOADER.DATASET_BS = [8, 32]
    _C.DATALOADER.DATASET_INPUT_SIZE = [896, 384]
    _C.DATALOADER.DATASET_INPUT_SCALE = [(0.1, 2.0), (0.5, 1.5)]
    _C.DATALOADER.DATASET_MIN_SIZES = [(640, 800), (320, 400)]
    _C.DATALOADER.DATASET_MAX_SIZES = [1333, 667]
    _C.DATALOADER.USE_TAR_DATASET = False
    _C.DATALOADER.TARFILE_PATH = "datasets/imagenet/metadata-22k/tar_files.npy"
    _C.DATALOADER.TAR_INDEX_DIR = "datasets/imagenet/metadata-22k/tarindex_npy"

    _C.SOLVER.USE_CUSTOM_SOLVER = False
    _C.SOLVER.OPTIMIZER = "SGD"
    _C.SOLVER.BACKBONE_MULTIPLIER = 1.0
    _C.SOLVER.CUSTOM_MULTIPLIER = 1.0
    _C.SOLVER.CUSTOM_MULTIPLIER_NAME = []

    # Deformable DETR (declared so that Detic's configs merge; not implemented)
    _C.MODEL.DETR = CN()
    _C.MODEL.DETR.NUM_CLASSES = 80
    _C.MODEL.DETR.FROZEN_WEIGHTS = ""
    _C.MODEL.DETR.GIOU_WEIGHT = 2.0
    _C.MODEL.DETR.L1_WEIGHT = 5.0
    _C.MODEL.DETR.DEEP_SUPERVISION = True
    _C.MODEL.DETR.NO_OBJECT_WEIGHT = 0.1
    _C.MODEL.DETR.CLS_WEIGHT = 2.0
    _C.MODEL.DETR.NUM_FEATURE_LEVELS = 4
    _C.MODEL.DETR.TWO_STAGE = False
    _C.MODEL.DETR.WITH_BOX_REFINE = False
    _C.MODEL.DETR.FOCAL_ALPHA = 0.25
    _C.MODEL.DETR.NHEADS = 8
    _C.MODEL.DETR.DROPOUT = 0.1
    _C.MODEL.DETR.DIM_FEEDFORWARD = 2048
    _C.MODEL.DETR.ENC_LAYERS = 6
    _C.MODEL.DETR.DEC_LAYERS = 6
    _C.MODEL.DETR.PRE_NORM = False
    _C.MODEL.DETR.HIDDEN_DIM = 256
    _C.MODEL.DETR.NUM_OBJECT_QUERIES = 100
    _C.MODEL.DETR.USE_FED_LOSS = False
    _C.MODEL.DETR.WEAK_WEIGHT = 0.1

    _C.INPUT.CUSTOM_AUG = ""
    _C.INPUT.TRAIN_SIZE = 640
    _C.INPUT.TEST_SIZE = 640
    _C.INPUT.SCALE_RANGE = (0.1, 2.0)
    _C.INPUT.TEST_INPUT_TYPE = "default"  # "default": fixed short/long edge; "square": max size = INPUT.TEST_SIZE

    _C.FIND_UNUSED_PARAM = True
    _C.EVAL_PRED_AR = False
    _C.EVAL_PROPOSAL_AR = False
    _C.EVAL_CAT_SPEC_AR = False
    _C.IS_DEBUG = False
    _C.QUICK_DEBUG = False
    _C.FP16 = False
    _C.EVAL_AP_FIX = False
    _C.GEN_PSEDO_LABELS = False
    _C.SAVE_DEBUG_PATH = "output/save_debug/"
