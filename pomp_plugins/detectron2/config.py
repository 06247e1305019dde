"""The config keys of the POMP detectron2 plugin.

Call ``add_pomp_config(cfg)`` on a fresh ``get_cfg()`` before ``merge_from_file``, as with any detectron2 project.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN


class PompConfigError(ValueError):
    """A config that cannot build a working model: it names the keys involved and what they must be."""


def without_federated_loss(cfg: CN) -> CN:
    """A copy of ``cfg`` without the federated loss, for models that are not trained: the loss only matters in
    training, and its class weights would otherwise be read from the training datasets."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
    return cfg


def add_pomp_config(cfg: CN) -> None:
    """Declare every key of the plugin on ``cfg`` with its default."""
    from .loader import add_detic_data_config

    add_detic_data_config(cfg)
    _C = cfg

    _C.MODEL.POMP = CN()
    # --- The classes: text embeddings computed once at build time (through the embedding cache) ------------------
    # Training classes: a vocabulary name (lvis, coco, coco-stuff, voc, ade20k, pascal-context, imagenet1k, ...),
    # a names file (.txt, one name per line, or a .json list), or comma-separated names ("cat,dog,traffic light").
    # Its size must equal MODEL.ROI_HEADS.NUM_CLASSES and its order the training dataset's category order.
    _C.MODEL.POMP.VOCABULARY = "lvis"
    # Inference classes, in the same forms; "" = VOCABULARY. Another size than NUM_CLASSES needs class-agnostic
    # box regression (ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG) and masks (ROI_MASK_HEAD.CLS_AGNOSTIC_MASK).
    _C.MODEL.POMP.TEST_VOCABULARY = ""
    # POMP prompt file (ours, or the reference {"state_dict": {"ctx": ...}} checkpoint); "" = use HARD_PROMPT.
    _C.MODEL.POMP.PROMPT = ""
    # The fixed phrase put before each class name when PROMPT is "" (the CLIP zero-shot baseline).
    _C.MODEL.POMP.HARD_PROMPT = "a photo of a"
    # open_clip model of the text encoder; "" = the model the prompt file names, else ViT-B-16.
    _C.MODEL.POMP.CLIP_MODEL = ""
    # Its weights: an open_clip tag (openai, ...), a local weights file, or "none" for random weights (tests).
    _C.MODEL.POMP.CLIP_PRETRAINED = "openai"
    # Device that encodes the class names at build time; "" = MODEL.DEVICE.
    _C.MODEL.POMP.TEXT_DEVICE = ""
    # A Detic-style .npy file [C, D] of training-class embeddings (float16/32, any norm); wins over PROMPT.
    _C.MODEL.POMP.EMBEDDING_FILE = ""
    # The same for the inference classes; "" = from TEST_VOCABULARY (or the training classes).
    _C.MODEL.POMP.TEST_EMBEDDING_FILE = ""
    # D, the dimension of the text embeddings: region features are projected to it (512 for CLIP ViT-B).
    _C.MODEL.POMP.EMBEDDING_DIM = 512

    # --- The zero-shot classifier (replaces the box predictor's cls_score) ---------------------------------------
    # Logits are TEMPERATURE * cos(Linear(region feature), class embedding); Detic uses 50.
    _C.MODEL.POMP.TEMPERATURE = 50.0
    # Background logit: "zero" (Detic: a constant 0 column) or "learned" (cosine to a learned embedding).
    _C.MODEL.POMP.BACKGROUND = "zero"
    # Detic's use_bias: a value < 0 adds a learned scalar bias to every logit, initialised to it
    # (-4.6 gives sigmoid 0.01 at start); 0 = no bias.
    _C.MODEL.POMP.USE_BIAS = 0.0

    # --- Detic's image-level supervision (needs META_ARCHITECTURE PompRCNN) --------------------------------------
    # Train on image-labelled data (datasets of format image-labels) as well as on boxes.
    _C.MODEL.POMP.WITH_IMAGE_LABELS = False
    # Weight of the image-label loss (Detic: 0.1).
    _C.MODEL.POMP.IMAGE_LABEL_LOSS_WEIGHT = 0.1
    # The max-size proposal is chosen among this many top-scoring RPN proposals of an image-labelled image.
    _C.MODEL.POMP.IMAGE_LABEL_NUM_PROPOSALS = 128

    # --- Datasets from paths --------------------------------------------------------------------------------------
    # Datasets to register, one entry per name:
    #   NAME: {FORMAT: lvis | lvis-base | coco | image-labels, JSON: path/to/annotations.json, IMAGE_ROOT: dir}
    # lvis-base is LVIS with the rare classes' annotations (and their federated-loss weight) removed.
    _C.DATASETS.REGISTER = CN(new_allowed=True)
