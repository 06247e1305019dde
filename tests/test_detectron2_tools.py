"""Evaluation (LVIS with APr/APc/APf, COCO), tools/train_net.py and tools/detect_demo.py on the toy data."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data.detection_utils import read_image
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, BoxMode, Instances, polygons_to_bitmask
from torch import nn

from pomp_plugins.detectron2 import add_pomp_config, build_evaluator, register_dataset
from pomp_plugins.detectron2.toy_data import NAMES, write_toy_dataset

ROOT = Path(__file__).resolve().parent.parent
LVIS_METRICS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, train_images=8, val_images=6)
    return root


class GroundTruthModel(nn.Module):
    """Predicts each image's annotations, score 1: a perfect detector."""

    def __init__(self, dataset_dicts):
        super().__init__()
        self.images = {d["image_id"]: d for d in dataset_dicts}

    def forward(self, inputs):
        outputs = []
        for x in inputs:
            d = self.images[x["image_id"]]
            instances = Instances((d["height"], d["width"]))
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
            instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float))
            instances.scores = torch.ones(len(boxes))
            instances.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
            instances.pred_masks = torch.stack(
                [
                    torch.from_numpy(polygons_to_bitmask(a["segmentation"], d["height"], d["width"]))
                    for a in d["annotations"]
                ]
            )
            outputs.append({"instances": instances})
        return outputs


@pytest.mark.parametrize("format", ["lvis", "coco"])
def test_evaluators_give_ap_100_for_the_ground_truth(toy, tmp_path, format):
    name = f"test_oracle_{format}"
    register_dataset(name, format, str(toy / "val.json"), str(toy / "images"))
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    model = GroundTruthModel(DatasetCatalog.get(name))
    results = inference_on_dataset(model, build_detection_test_loader(cfg, name), build_evaluator(cfg, name))
    for task in ("bbox", "segm"):
        metrics = {k: v for k, v in results[task].items() if "-" not in k}  # COCO adds per-class APs
        if format == "lvis":
            assert set(metrics) == LVIS_METRICS
        assert metrics["AP"] == pytest.approx(100.0) and metrics["AP50"] == pytest.approx(100.0)
        if format == "lvis":
            assert [metrics["APr"], metrics["APc"], metrics["APf"]] == pytest.approx([100.0] * 3)
    assert not hasattr(np, "float")  # lvis's np.float only existed during the evaluation


def toy_args(toy, output_dir, *extra, config="POMP-Tiny-CPU.yaml"):
    datasets = {"pomp_toy_train": "train", "pomp_toy_val": "val"}
    if "image-labels" in config:
        datasets["pomp_toy_image_labels"] = "image_labels"
    paths = [
        [
            f"DATASETS.REGISTER.{name}.JSON",
            str(toy / f"{split}.json"),
            f"DATASETS.REGISTER.{name}.IMAGE_ROOT",
            str(toy / "images"),
        ]
        for name, split in datasets.items()
    ]
    return [
        "--config-file",
        str(ROOT / "detectron2_configs" / config),
        *extra,
        "OUTPUT_DIR",
        str(output_dir),
        "TEST.DETECTIONS_PER_IMAGE",
        "20",
        "MODEL.ROI_BOX_HEAD.CAT_FREQ_PATH",
        str(toy / "train_cat_info.json"),
        *sum(paths, []),
    ]


@pytest.mark.slow
def test_train_net_trains_then_evaluates_on_lvis_and_coco(toy, tmp_path, capsys):
    train_net = load_tool("train_net")
    no_test = ("SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()")  # evaluated below
    # Detic's recipe: its loader (box and image-label batches), AdamW + full-model clipping, WarmupCosine, AMP.
    recipe = (
        "SOLVER.USE_CUSTOM_SOLVER",
        "True",
        "SOLVER.OPTIMIZER",
        "ADAMW",
        "SOLVER.BASE_LR",
        "0.0002",
        "SOLVER.LR_SCHEDULER_NAME",
        "WarmupCosineLR",
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        "True",
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
        "full_model",
        "SOLVER.AMP.ENABLED",
        "True",
        "SEED",
        "2",  # the loader then draws an image-labelled batch, then a box batch
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.TRAIN_ITER",
        "2",
    )  # 2 iterations of a 4-iteration schedule (AMP steps are slow on a CPU: ~2 s each)
    assert (
        train_net.run_tool(
            train_net.cli,
            toy_args(toy, tmp_path / "detic", *no_test, *recipe, config="POMP-Tiny-CPU_image-labels.yaml"),
        )
        == 0
    )
    metrics = [json.loads(line) for line in (tmp_path / "detic" / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics) == 1
    assert any(m.get("image_loss_stage2", 0) > 0 for m in metrics)  # an image-labelled batch was trained on
    assert (tmp_path / "detic" / "model_final.pth").is_file()
    assert all(np.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
    assert train_net.run_tool(train_net.cli, toy_args(toy, tmp_path, *no_test)) == 0
    weights = tmp_path / "model_final.pth"
    assert weights.is_file()

    results = train_net.main(
        train_net.parse_args(toy_args(toy, tmp_path / "eval", "--eval-only", "MODEL.WEIGHTS", str(weights)))
    )
    for task in ("bbox", "segm"):
        assert set(results[task]) == LVIS_METRICS
        assert all(np.isfinite(results[task][k]) for k in ("AP", "APr", "APc", "APf"))

    # Cross-dataset: the same model on a COCO-format test set with its own class names as the vocabulary.
    coco = [
        "--eval-only",
        "--dataset",
        "toy_coco",
        "coco",
        str(toy / "val.json"),
        str(toy / "images"),
        "--test-vocabulary",
        ",".join(NAMES),
        "MODEL.WEIGHTS",
        str(weights),
        "DATASETS.TEST",
        "('toy_coco',)",
    ]
    results = train_net.main(train_net.parse_args(toy_args(toy, tmp_path / "coco", *coco)))
    assert np.isfinite(results["bbox"]["AP"]) and "APr" not in results["bbox"]

    wrong = coco[:-5] + ["cat,dog", "MODEL.WEIGHTS", str(weights), "DATASETS.TEST", "('toy_coco',)"]
    capsys.readouterr()
    assert train_net.run_tool(train_net.cli, toy_args(toy, tmp_path / "wrong", *wrong)) == 2
    assert "error: dataset 'toy_coco' has 6 classes but the inference vocabulary has 2" in capsys.readouterr().err


@pytest.mark.slow
def test_detect_demo_draws_a_vocabulary_of_choice(toy, tmp_path, capsys):
    detect_demo = load_tool("detect_demo")
    output = tmp_path / "detections.png"
    args = [
        "--config-file",
        str(ROOT / "detectron2_configs" / "POMP-Tiny-CPU.yaml"),
        "--input",
        str(toy / "images" / "val_0000.png"),
        "--output",
        str(output),
        "--confidence-threshold",
        "0",
    ]
    assert detect_demo.run_tool(detect_demo.main, args + ["--vocabulary", "blue square,zebra"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["classes"] == 2 and summary["detections"]
    assert {d["class"] for d in summary["detections"]} <= {"blue square", "zebra"}
    assert read_image(str(output)).shape[:2] == read_image(str(toy / "images" / "val_0000.png")).shape[:2]

    assert detect_demo.run_tool(detect_demo.main, args + ["--vocabulary", str(tmp_path / "none.txt")]) == 2
    assert "error: names file" in capsys.readouterr().err
    assert detect_demo.run_tool(detect_demo.main, args + ["MODEL.POMP.PROMPT", str(tmp_path / "none.pt")]) == 2
    assert "error: prompt file" in capsys.readouterr().err
