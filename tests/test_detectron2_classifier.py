"""The zero-shot box classifier against Detic's formula, Detic's embedding files, and the config/vocabulary parts."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg

from pomp_plugins.detectron2 import ZeroShotBoxClassifier, add_pomp_config, parse_vocabulary
from pomp_plugins.detectron2.config import PompConfigError
from pomp_plugins.detectron2.vocabulary import config_class_embeddings, config_num_classes
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
    classifier = ZeroShotBoxClassifier(1024, embeddings, bias=use_bias).eval()
    x = torch.randn(7, 1024)
    bias = classifier.cls_bias if use_bias < 0 else None
    expected = detic_logits(x, classifier.linear, np.load(tmp_path / "lvis_clip.npy"), cls_bias=bias)
    logits = classifier(x)
    assert logits.shape == (7, 1204)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
    assert (logits[:, -1] == (use_bias if use_bias < 0 else 0.0)).all()  # zero background column (+ bias)
    assert "train_classes.class_embeddings" not in classifier.state_dict()  # checkpoints pin no vocabulary


def test_training_and_inference_classes_are_separate():
    train, test = torch.randn(5, 16), torch.randn(3, 16)
    classifier = ZeroShotBoxClassifier(32, train, test, background="learned")
    x = torch.randn(4, 32)
    assert classifier.train()(x).shape == (4, 6) and classifier.eval()(x).shape == (4, 4)
    classifier.set_test_class_embeddings(train[[4, 0]])
    torch.testing.assert_close(classifier.eval()(x)[:, :2], classifier.train()(x)[:, [4, 0]])
    torch.testing.assert_close(classifier.eval()(x)[:, 2], classifier.train()(x)[:, 5])  # the same background
    with pytest.raises(EmbeddingFileError, match="dimension 8, the classifier has 16"):
        classifier.set_test_class_embeddings(torch.randn(3, 8))
    with pytest.raises(EmbeddingFileError, match="dimension 8, the classifier has 16"):
        ZeroShotBoxClassifier(32, train, torch.randn(3, 8))


def test_vocabulary_strings(tmp_path):
    assert len(parse_vocabulary("lvis")) == 1203 and len(parse_vocabulary("coco")) == 80
    assert parse_vocabulary(" cat, dog ,traffic light").names == ("cat", "dog", "traffic light")
    (tmp_path / "names.txt").write_text("cat\n# a comment\n\ndog\n")
    assert parse_vocabulary(str(tmp_path / "names.txt")).names == ("cat", "dog")
    with pytest.raises(VocabularyError, match="unknown vocabulary 'lvsi'; expected one of .*lvis"):
        parse_vocabulary("lvsi")
    with pytest.raises(VocabularyError, match="Objects365 class names are not shipped"):
        parse_vocabulary("objects365")
    with pytest.raises(FileNotFoundError, match="names file .*missing.txt' does not exist"):
        parse_vocabulary(str(tmp_path / "missing.txt"))
    with pytest.raises(VocabularyError, match="appears twice"):
        parse_vocabulary("cat,dog,cat")


def tiny_text_cfg(**pomp):
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POMP.CLIP_MODEL = "pomp-tiny"
    cfg.MODEL.POMP.CLIP_PRETRAINED = "none"
    cfg.MODEL.POMP.EMBEDDING_DIM = 64
    for key, value in pomp.items():
        setattr(cfg.MODEL.POMP, key, value)
    return cfg


def test_config_embeddings_from_a_prompt_or_a_file(tmp_path):
    cfg = tiny_text_cfg(VOCABULARY="cat,dog,bird")
    embeddings = config_class_embeddings(cfg)
    assert embeddings.shape == (3, 64) and config_num_classes(cfg) == 3
    np.save(tmp_path / "coco.npy", np.random.randn(80, 64).astype(np.float16))
    cfg = tiny_text_cfg(VOCABULARY="", TEST_VOCABULARY="", TEST_EMBEDDING_FILE=str(tmp_path / "coco.npy"))
    with pytest.raises(PompConfigError, match="set MODEL.POMP.VOCABULARY"):
        config_class_embeddings(cfg)
    assert config_class_embeddings(cfg, test=True).shape == (80, 64) and config_num_classes(cfg, test=True) == 80


def test_bad_embedding_sources_fail_clearly(tmp_path):
    np.save(tmp_path / "lvis.npy", np.random.randn(1203, 512).astype(np.float16))
    with pytest.raises(EmbeddingFileError, match="dimension 512, but the classifier expects dimension 64"):
        config_class_embeddings(tiny_text_cfg(VOCABULARY="", EMBEDDING_FILE=str(tmp_path / "lvis.npy")))
    with pytest.raises(EmbeddingFileError, match="holds 1203 classes but the vocabulary has 80"):
        config_class_embeddings(tiny_text_cfg(VOCABULARY="coco", EMBEDDING_FILE=str(tmp_path / "lvis.npy"),
                                              EMBEDDING_DIM=512))
    with pytest.raises(FileNotFoundError, match="prompt file .*nope.pt' does not exist"):
        config_class_embeddings(tiny_text_cfg(VOCABULARY="coco", PROMPT=str(tmp_path / "nope.pt")))
