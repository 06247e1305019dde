"""The zero-shot box classifier against Detic's formula (written out), Detic's embedding files and checkpoints,
and the config/vocabulary parts that say where its classes come from."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from pomp_plugins.detectron2 import (
    ZeroShotBoxClassifier,
    add_pomp_config,
    inference_class_embeddings,
    parse_vocabulary,
    use_pomp_names,
)
from pomp_plugins.detectron2.config import PompConfigError
from pomp_plugins.detectron2.vocabulary import config_num_classes, training_class_embeddings
from pomp_plugins.prompt import EmbeddingFileError, VocabularyError, load_embedding_file


def detic_logits(x, linear, zs_weight_npy, temperature=50.0, cls_bias=None):
    """Detic's ZeroShotClassifier, written out: zs_weight is the .npy [C, D] as loaded by Detic."""
    zs_weight = torch.tensor(zs_weight_npy, dtype=torch.float32).permute(1, 0).contiguous()  # D x C
    zs_weight = torch.cat([zs_weight, zs_weight.new_zeros((zs_weight.shape[0], 1))], dim=1)  # D x (C + 1)
    zs_weight = F.normalize(zs_weight, p=2, dim=0)
    x = F.linear(x, linear.weight, linear.bias)
    x = temperature * F.normalize(x, p=2, dim=1)
    x = torch.mm(x, zs_weight)
    return x + cls_bias if cls_bias is not None else x


@pytest.mark.parametrize("use_bias", [0.0, -4.6])
def test_logits_equal_detics_formula_on_a_detic_npy(tmp_path, use_bias):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "lvis_clip.npy", (rng.standard_normal((1203, 512)) * 10).astype(np.float16))
    embeddings = load_embedding_file(tmp_path / "lvis_clip.npy", dim=512)
    classifier = ZeroShotBoxClassifier(1024, embeddings, use_bias=use_bias).eval()
    x = torch.randn(7, 1024)
    bias = classifier.cls_bias if use_bias < 0 else None
    expected = detic_logits(x, classifier.linear, np.load(tmp_path / "lvis_clip.npy"), cls_bias=bias)
    logits = classifier(x)
    assert logits.shape == (7, 1204)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    assert (logits[:, -1] == (use_bias if use_bias < 0 else 0.0)).all()  # zero background column (+ bias)
    state = classifier.state_dict()
    assert state["zs_weight"].shape == (512, 1204) and (state["zs_weight"][:, -1] == 0).all()  # Detic's buffer
    assert set(state) == {"linear.weight", "linear.bias", "zs_weight"} | ({"cls_bias"} if use_bias < 0 else set())


def test_training_and_inference_classes_are_separate():
    train, test = torch.randn(5, 16), torch.randn(3, 16)
    classifier = ZeroShotBoxClassifier(32, train, dim=16)
    classifier.set_test_class_embeddings(test)
    x = torch.randn(4, 32)
    assert classifier.train()(x).shape == (4, 6) and classifier.eval()(x).shape == (4, 4)
    classifier.set_test_class_embeddings(train[[4, 0]])
    torch.testing.assert_close(classifier.eval()(x)[:, :2], classifier.train()(x)[:, [4, 0]])
    assert "test_zs_weight" not in classifier.state_dict()  # checkpoints hold the training classifier only
    classifier.set_test_class_embeddings(None)
    torch.testing.assert_close(classifier.eval()(x), classifier.train()(x))
    with pytest.raises(EmbeddingFileError, match="8-d, the classifier's 16"):
        classifier.set_test_class_embeddings(torch.randn(3, 8))


def test_loading_a_checkpoint_keeps_the_configured_classifier():
    """Detic's RESET_CLS_TRAIN semantics: a checkpoint's zs_weight (another vocabulary) is not loaded; the rest is.
    Detic's learned "rand" classifier (a parameter) does load."""
    ours = ZeroShotBoxClassifier(32, torch.randn(5, 16), dim=16)
    other = ZeroShotBoxClassifier(32, torch.randn(5, 16), dim=16)
    configured = ours.zs_weight.clone()
    assert ours.load_state_dict(other.state_dict()) is not None
    assert torch.equal(ours.zs_weight, configured) and torch.equal(ours.linear.weight, other.linear.weight)
    learned, source = (ZeroShotBoxClassifier(32, None, dim=16, num_classes=5) for _ in range(2))
    assert isinstance(learned.zs_weight, torch.nn.Parameter)
    learned.load_state_dict(source.state_dict())
    assert torch.equal(learned.zs_weight, source.zs_weight)


def test_vocabulary_strings(tmp_path):
    assert len(parse_vocabulary("lvis")) == 1203 and len(parse_vocabulary("coco")) == 80
    objects365 = parse_vocabulary("objects365")
    assert len(objects365) == 365 and objects365.names[:2] == ("person", "sneakers")  # CenterNet2's v1 names, by id
    assert parse_vocabulary(" cat, dog ,traffic light").names == ("cat", "dog", "traffic light")
    (tmp_path / "names.txt").write_text("cat\n# a comment\n\ndog\n")
    assert parse_vocabulary(str(tmp_path / "names.txt")).names == ("cat", "dog")
    with pytest.raises(VocabularyError, match="unknown vocabulary 'lvsi'; expected one of .*lvis"):
        parse_vocabulary("lvsi")
    with pytest.raises(FileNotFoundError, match="names file .*missing.txt' does not exist"):
        parse_vocabulary(str(tmp_path / "missing.txt"))
    with pytest.raises(VocabularyError, match="appears twice"):
        parse_vocabulary("cat,dog,cat")


def tiny_text_cfg(*opts):
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.POMP.CLIP_MODEL",
            "pomp-tiny",
            "MODEL.POMP.CLIP_PRETRAINED",
            "none",
            "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM",
            64,
            *opts,
        ]
    )
    return cfg


def test_config_embeddings_from_a_prompt_or_a_detic_npy(tmp_path):
    cfg = tiny_text_cfg("MODEL.POMP.VOCABULARY", "cat,dog,bird", "MODEL.ROI_HEADS.NUM_CLASSES", 3)
    assert training_class_embeddings(cfg).shape == (3, 64) and config_num_classes(cfg) == 3
    np.save(tmp_path / "coco.npy", np.random.randn(80, 64).astype(np.float16))
    cfg = tiny_text_cfg(
        "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH", str(tmp_path / "coco.npy"), "MODEL.ROI_HEADS.NUM_CLASSES", 80
    )
    torch.testing.assert_close(training_class_embeddings(cfg), load_embedding_file(tmp_path / "coco.npy"))
    assert training_class_embeddings(tiny_text_cfg("MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH", "rand")) is None
    with pytest.raises(PompConfigError, match="has 80 classes but MODEL.ROI_HEADS.NUM_CLASSES is 1203"):
        training_class_embeddings(
            tiny_text_cfg(
                "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH",
                str(tmp_path / "coco.npy"),
                "MODEL.ROI_HEADS.NUM_CLASSES",
                1203,
            )
        )


def test_a_template_ensemble_as_the_classifier(tiny_clip):
    """MODEL.POMP.TEMPLATES: each class the normalised mean of its names in ViLD's templates, encoded by open_clip."""
    import open_clip

    from pomp_plugins.prompt import get_templates

    names = ["cat", "traffic light"]
    cfg = tiny_text_cfg(
        "MODEL.POMP.VOCABULARY", ",".join(names), "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.POMP.TEMPLATES", "vild"
    )
    with torch.no_grad():
        expected = torch.stack(
            [
                F.normalize(
                    F.normalize(
                        tiny_clip.model.encode_text(
                            open_clip.tokenize([template.format(name) for template in get_templates("vild")])
                        ),
                        dim=-1,
                    ).mean(0),
                    dim=-1,
                )
                for name in names
            ]
        )
    torch.testing.assert_close(training_class_embeddings(cfg), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(PompConfigError, match="exclude each other"):
        training_class_embeddings(
            tiny_text_cfg(
                "MODEL.POMP.VOCABULARY",
                "cat,dog",
                "MODEL.ROI_HEADS.NUM_CLASSES",
                2,
                "MODEL.POMP.TEMPLATES",
                "vild",
                "MODEL.POMP.PROMPT",
                "p.pt",
            )
        )


def test_one_classifier_per_test_set(tmp_path):
    np.save(tmp_path / "o365.npy", np.random.randn(365, 64).astype(np.float16))
    cfg = tiny_text_cfg(
        "MODEL.RESET_CLS_TESTS",
        True,
        "DATASETS.TEST",
        ("coco_2017_val", "objects365_val", "x"),
        "MODEL.POMP.TEST_VOCABULARIES",
        ["coco", ""],
        "MODEL.TEST_CLASSIFIERS",
        ["", str(tmp_path / "o365.npy")],
        "MODEL.TEST_NUM_CLASSES",
        [80, 365],
    )
    assert inference_class_embeddings(cfg, 0).shape == (80, 64) and config_num_classes(cfg, True, 0) == 80
    assert inference_class_embeddings(cfg, 1).shape == (365, 64) and config_num_classes(cfg, True, 1) == 365
    with pytest.raises(PompConfigError, match="test set 2 \\(x\\) has neither"):
        inference_class_embeddings(cfg, 2)
    assert inference_class_embeddings(tiny_text_cfg(), None) is None  # the training classifier
    assert inference_class_embeddings(tiny_text_cfg("MODEL.POMP.TEST_VOCABULARY", "cat,dog"), None).shape == (2, 64)


def test_bad_embedding_sources_fail_clearly(tmp_path):
    np.save(tmp_path / "lvis.npy", np.random.randn(1203, 512).astype(np.float16))
    with pytest.raises(EmbeddingFileError, match="dimension 512, but the classifier expects dimension 64"):
        training_class_embeddings(
            tiny_text_cfg(
                "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_PATH",
                str(tmp_path / "lvis.npy"),
                "MODEL.ROI_HEADS.NUM_CLASSES",
                1203,
            )
        )
    with pytest.raises(EmbeddingFileError, match="gives 64-d text embeddings.*dimension 512"):
        training_class_embeddings(
            tiny_text_cfg("MODEL.POMP.VOCABULARY", "coco", "MODEL.ROI_BOX_HEAD.ZEROSHOT_WEIGHT_DIM", 512)
        )
    with pytest.raises(FileNotFoundError, match="prompt file .*nope.pt' does not exist"):
        training_class_embeddings(
            tiny_text_cfg("MODEL.POMP.VOCABULARY", "coco", "MODEL.POMP.PROMPT", str(tmp_path / "nope.pt"))
        )


def test_detic_names_map_to_ours():
    cfg = tiny_text_cfg(
        "MODEL.META_ARCHITECTURE",
        "CustomRCNN",
        "MODEL.ROI_HEADS.NAME",
        "DeticCascadeROIHeads",
        "MODEL.BACKBONE.NAME",
        "build_swintransformer_fpn_backbone",
    )
    mapped = use_pomp_names(cfg)
    assert (mapped.MODEL.META_ARCHITECTURE, mapped.MODEL.ROI_HEADS.NAME, mapped.MODEL.BACKBONE.NAME) == (
        "PompRCNN",
        "PompCascadeROIHeads",
        "build_pomp_swin_fpn_backbone",
    )
    assert cfg.MODEL.META_ARCHITECTURE == "CustomRCNN"  # a copy
    stock = tiny_text_cfg("MODEL.ROI_HEADS.NAME", "Res5ROIHeads")
    assert use_pomp_names(stock).MODEL.ROI_HEADS.NAME == "Res5ROIHeads"  # no zero-shot classifier asked for
    stock.MODEL.ROI_BOX_HEAD.USE_ZEROSHOT_CLS = True
    assert use_pomp_names(stock).MODEL.ROI_HEADS.NAME == "PompRes5ROIHeads"
