"""Which classes a detector knows: vocabularies from config strings, their embeddings, and the test-time swap.

A vocabulary string (``MODEL.POMP.VOCABULARY`` / ``TEST_VOCABULARY``, the tools' options) is any spec of the
core's :func:`~pomp_plugins.prompt.parse_vocabulary`: a named vocabulary (``lvis``, ``coco``, ``objects365``, ...),
a names file (``.txt``/``.json``), or comma-separated names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data.catalog import Metadata
from torch import nn

from pomp_plugins.prompt import (
    ClassEmbeddings,
    EmbeddingFileError,
    Vocabulary,
    class_embeddings,
    custom_vocabulary,
    load_embedding_file,
    parse_vocabulary,
)

from .config import PompConfigError


def vocabulary_metadata(vocabulary: Vocabulary | Sequence[str]) -> Metadata:
    """Metadata whose ``thing_classes`` are the vocabulary's class names, for detectron2's ``Visualizer``."""
    if not isinstance(vocabulary, Vocabulary):
        vocabulary = custom_vocabulary(vocabulary)
    return Metadata(name=f"pomp-vocabulary:{vocabulary.name}", thing_classes=list(vocabulary.names))


def config_metadata(cfg: CfgNode) -> Metadata:
    """Metadata of the inference classes ``cfg`` names (numbered classes when only an embedding file gives them)."""
    spec = cfg.MODEL.POMP.TEST_VOCABULARY or cfg.MODEL.POMP.VOCABULARY
    if spec:
        return vocabulary_metadata(parse_vocabulary(spec))
    return Metadata(
        name="pomp-vocabulary:embedding-file",
        thing_classes=[f"class {i}" for i in range(config_num_classes(cfg, test=True))],
    )


def text_encoder_arguments(cfg: CfgNode) -> dict:
    """The prompt and CLIP keyword arguments of ``class_embeddings`` given by ``cfg.MODEL.POMP``."""
    pomp = cfg.MODEL.POMP
    if pomp.PROMPT and pomp.TEMPLATES:
        raise PompConfigError(
            f"MODEL.POMP.PROMPT ({pomp.PROMPT}) and MODEL.POMP.TEMPLATES ({pomp.TEMPLATES}) "
            'exclude each other: set one of them to ""'
        )
    return {
        "prompt": pomp.PROMPT or None,
        "templates": pomp.TEMPLATES or None,
        "hard_prompt": None if pomp.PROMPT or pomp.TEMPLATES else pomp.HARD_PROMPT,
        "clip_model": pomp.CLIP_MODEL or None,
        "clip_pretrained": pomp.CLIP_PRETRAINED,
        "device": pomp.TEXT_DEVICE or cfg.MODEL.DEVICE,
    }


def _encode(cfg: CfgNode, spec: str) -> torch.Tensor:
    """``[C, D]`` float32 raw text embeddings of the vocabulary ``spec`` with the prompt and CLIP ``cfg`` names
    (unnormalised: ``NORM_WEIGHT`` decides, as for Detic's .npy files)."""
    return class_embeddings(
        spec, dim=cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM, normalize=False, **text_encoder_arguments(cfg)
    )


def _read_file(cfg: CfgNode, path: str) -> torch.Tensor:
    """``[C, D]`` float32 rows of a Detic .npy as stored, checked against ``ZEROSHOT_WEIGHT_DIM``."""
    return class_embeddings(embedding_file=path, dim=cfg.MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM, normalize=False)


def training_class_embeddings(cfg: CfgNode) -> torch.Tensor | None:
    """The training-class embeddings ``[C, D]`` float32 of ``cfg``: ``MODEL.POMP.VOCABULARY`` encoded with the POMP
    prompt, else Detic's ``MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH`` (.npy); ``None`` for Detic's ``"rand"``.

    Raises:
        PompConfigError: the classes are not ``MODEL.ROI_HEADS.NUM_CLASSES`` many.
        EmbeddingFileError: the embeddings are not ``ZEROSHOT_WEIGHT_DIM``-dimensional.
        VocabularyError, FileNotFoundError, PromptFileError: a bad vocabulary, a missing file.
    """
    pomp, box = cfg.MODEL.POMP, cfg.MODEL.ROI_BOX_HEAD
    if pomp.VOCABULARY:
        embeddings, source = _encode(cfg, pomp.VOCABULARY), f"MODEL.POMP.VOCABULARY {pomp.VOCABULARY}"
    elif box.ZEROSHOT_WEIGHT_PATH == "rand":
        return None
    else:
        embeddings = _read_file(cfg, box.ZEROSHOT_WEIGHT_PATH)
        source = f"MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH {box.ZEROSHOT_WEIGHT_PATH}"
    if len(embeddings) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise PompConfigError(
            f"the training classifier ({source}) has {len(embeddings)} classes but "
            f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES}"
        )
    return embeddings


def inference_class_embeddings(cfg: CfgNode, dataset_index: int | None = None) -> torch.Tensor | None:
    """The inference-class embeddings ``[C', D]`` of ``cfg`` (``None``: the training classifier).

    With ``MODEL.RESET_CLS_TESTS`` and a ``dataset_index`` (into ``DATASETS.TEST``): that test set's classifier,
    ``MODEL.POMP.TEST_VOCABULARIES[i]`` encoded with the prompt, or Detic's ``MODEL.TEST_CLASSIFIERS[i]`` (.npy)
    where the former is absent or ""; otherwise ``MODEL.POMP.TEST_VOCABULARY``.
    """
    if cfg.MODEL.RESET_CLS_TESTS and dataset_index is not None:
        vocabularies, files = cfg.MODEL.POMP.TEST_VOCABULARIES, cfg.MODEL.TEST_CLASSIFIERS
        if dataset_index < len(vocabularies) and vocabularies[dataset_index]:
            return _encode(cfg, vocabularies[dataset_index])
        if dataset_index < len(files) and files[dataset_index]:
            return _read_file(cfg, files[dataset_index])
        raise PompConfigError(
            f"MODEL.RESET_CLS_TESTS: test set {dataset_index} "
            f"({cfg.DATASETS.TEST[dataset_index]}) has neither a MODEL.POMP.TEST_VOCABULARIES "
            "nor a MODEL.TEST_CLASSIFIERS entry"
        )
    if cfg.MODEL.POMP.TEST_VOCABULARY:
        return _encode(cfg, cfg.MODEL.POMP.TEST_VOCABULARY)
    return None


def config_num_classes(cfg: CfgNode, test: bool = False, dataset_index: int | None = None) -> int:
    """The number of (training, or with ``test`` inference) classes of ``cfg``, without encoding any text."""
    pomp = cfg.MODEL.POMP
    if test:
        if cfg.MODEL.RESET_CLS_TESTS and dataset_index is not None:
            if dataset_index < len(pomp.TEST_VOCABULARIES) and pomp.TEST_VOCABULARIES[dataset_index]:
                return len(parse_vocabulary(pomp.TEST_VOCABULARIES[dataset_index]))
            if dataset_index < len(cfg.MODEL.TEST_NUM_CLASSES):
                return cfg.MODEL.TEST_NUM_CLASSES[dataset_index]
        if pomp.TEST_VOCABULARY:
            return len(parse_vocabulary(pomp.TEST_VOCABULARY))
    return cfg.MODEL.ROI_HEADS.NUM_CLASSES


def set_test_classifier(model: nn.Module, cfg: CfgNode, dataset_index: int | None) -> None:
    """Before evaluating ``DATASETS.TEST[dataset_index]``: give ``model`` that test set's classifier
    (``inference_class_embeddings``), or the training one when ``cfg`` names none (Detic's ``reset_cls_test``);
    ``dataset_index`` ``None``: the classifier of ``MODEL.POMP.TEST_VOCABULARY`` (or the training one)."""
    zero_shot_roi_heads(model).set_test_class_embeddings(inference_class_embeddings(cfg, dataset_index))


def zero_shot_roi_heads(model: nn.Module) -> nn.Module:
    """The POMP ROI heads of a built detector, also through ``DistributedDataParallel``/``DataParallel``."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    roi_heads = getattr(model, "roi_heads", None)
    if not hasattr(roi_heads, "set_test_class_embeddings"):
        raise PompConfigError(
            f"the model's ROI heads ({type(roi_heads).__name__}) have no zero-shot classifier; "
            "use MODEL.ROI_HEADS.NAME PompCascadeROIHeads, PompRes5ROIHeads or "
            "PompStandardROIHeads with MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS True"
        )
    return roi_heads


def set_class_embeddings(
    model: nn.Module, embeddings: ClassEmbeddings, names: str | Vocabulary | Sequence[str] | None = None
) -> Metadata:
    """Make every box-predictor stage of ``model`` predict the classes of ``embeddings`` ``[C', D]`` (a tensor, a
    numpy array or a ``.npy`` file, in Detic's format or normalised).

    ``names``: the classes' names, in the embeddings' order (a vocabulary spec, a ``Vocabulary`` or a list); without
    them the classes are called ``class 0`` ... Training is unaffected (it keeps the training classes). Returns the
    metadata to visualise or evaluate the new predictions with (``thing_classes``: the ``C'`` names).

    Raises:
        EmbeddingFileError: not ``[C', D]`` with the classifier's ``D``, or not as many classes as ``names``.
        PompConfigError: the model has no zero-shot classifier, or class-specific box regression or masks and
            another number of classes.
    """
    roi_heads = zero_shot_roi_heads(model)
    tensor = load_embedding_file(embeddings)
    vocabulary = None if names is None else parse_vocabulary(names)
    if vocabulary is not None and len(vocabulary) != len(tensor):
        raise EmbeddingFileError(f"the embeddings hold {len(tensor)} classes but there are {len(vocabulary)} names")
    roi_heads.set_test_class_embeddings(tensor)
    if vocabulary is None:
        return Metadata(name="pomp-vocabulary:embeddings", thing_classes=[f"class {i}" for i in range(len(tensor))])
    return vocabulary_metadata(vocabulary)


def set_vocabulary(
    model: nn.Module,
    cfg: CfgNode,
    vocabulary: str | Vocabulary | Sequence[str],
    embeddings: ClassEmbeddings | None = None,
) -> Metadata:
    """Swap ``model``'s inference classes to ``vocabulary``, encoded with the prompt and CLIP ``cfg`` names.

    ``vocabulary``: a vocabulary spec (see ``parse_vocabulary``: a name, a names file, ``"a,b,c"``), a
    ``Vocabulary`` or a list of names; ``embeddings``: precomputed embeddings of its classes in its order (a tensor,
    an array or a ``.npy`` file) instead of encoding the names. Returns the metadata to visualise or evaluate the new
    predictions with (``thing_classes`` = the new class names): use it, not the training set's, from then on.
    """
    vocabulary = parse_vocabulary(vocabulary)
    if embeddings is not None:
        return set_class_embeddings(model, embeddings, vocabulary)
    roi_heads = zero_shot_roi_heads(model)
    weights = class_embeddings(vocabulary, dim=roi_heads.embedding_dim, normalize=False, **text_encoder_arguments(cfg))
    roi_heads.set_test_class_embeddings(weights)
    return vocabulary_metadata(vocabulary)
