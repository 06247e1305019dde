#!/usr/bin/env python
"""Train and evaluate POMP open-vocabulary detectors with detectron2.

    .venv/bin/python tools/train_net.py --num-gpus 8 \\
        --config-file detectron2_configs/BoxSup-C2_Lbase_POMP_R5021k_640b64_4x.yaml --output output/boxsup
    .venv/bin/python tools/train_net.py --eval-only \\
        --config-file detectron2_configs/Detic_LbaseI_POMP_R5021k_640b64_4x_ft4x_max-size.yaml \\
        MODEL.WEIGHTS models/Detic_LbaseI_CLIP_R5021k_640b64_4x_ft4x_max-size.pth  # a Detic checkpoint
    .venv/bin/python tools/train_net.py --config-file ... --eval-only --test-vocabulary coco \\
        --dataset coco_val coco datasets/coco/annotations/instances_val2017.json datasets/coco/val2017 \\
        DATASETS.TEST '("coco_val",)' MODEL.WEIGHTS model_final.pth
    .venv/bin/python tools/train_net.py --zoo-config COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml \\
        --config-file detectron2_configs/DropIn-POMP-Classifier.yaml

LVIS-format test sets are evaluated with detectron2's LVISEvaluator (AP, APr, APc, APf), COCO ones with its
COCOEvaluator. Trailing ``KEY VALUE`` pairs override the config, as in every detectron2 tool; they win over
``--output`` (``OUTPUT_DIR``) and ``--device`` (``MODEL.DEVICE``; auto: cuda when available, else cpu).

Training follows Detic's train_net.py: its multi-dataset loader (``DATALOADER.SAMPLER_TRAIN MultiDatasetSampler``),
input pipeline (``INPUT.CUSTOM_AUG``, ``INPUT.TEST_INPUT_TYPE``), optimizer (``SOLVER.USE_CUSTOM_SOLVER``: SGD/ADAMW,
``BACKBONE_MULTIPLIER``, full-model gradient clipping), detectron2's LR schedules, ``FP16`` (loss scaling; the model
casts its backbone) or detectron2's ``SOLVER.AMP`` (the whole forward autocast, CUDA or CPU), ``FIND_UNUSED_PARAM``
for DDP and ``SOLVER.TRAIN_ITER`` (stop early on the ``MAX_ITER`` schedule).
"""

import logging
import sys
import weakref

from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.engine import (
    DefaultTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
)
from detectron2.engine.train_loop import TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pomp_plugins.detectron2 import (
    DATASET_FORMATS,
    add_pomp_config,
    build_evaluator,
    build_train_loader,
    check_test_classes,
    register_datasets_from_config,
    set_test_classifier,
    use_pomp_names,
)
from pomp_plugins.detectron2.cli import run_tool
from pomp_plugins.detectron2.loader import build_test_mapper
from pomp_plugins.detectron2.solver import MixedPrecisionTrainer, build_optimizer, mixed_precision
from pomp_plugins.prompt.cli import VOCABULARY_SPEC_HELP, add_device_argument, add_output_argument, resolve_device


class Trainer(DefaultTrainer):
    """detectron2's trainer with Detic's data loader, optimizer and mixed precision, and the POMP evaluators."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False, find_unused_parameters=cfg.FIND_UNUSED_PARAM)
        amp = mixed_precision(cfg)
        self._trainer = (
            SimpleTrainer(model, data_loader, optimizer)
            if amp is None
            else MixedPrecisionTrainer(model, data_loader, optimizer, **amp)
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER if cfg.SOLVER.TRAIN_ITER < 0 else cfg.SOLVER.TRAIN_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        loader = build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))
        check_test_classes(cfg, dataset_name)  # the loaded dataset now has its class list
        return loader

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's test, one test set at a time, each with its own classifier under ``MODEL.RESET_CLS_TESTS``
        (Detic's cross-dataset evaluation); the training classifier is restored afterwards."""
        if not cfg.MODEL.RESET_CLS_TESTS:
            return super().test(cfg, model, evaluators)
        results = {}
        for index, name in enumerate(cfg.DATASETS.TEST):
            one = cfg.clone()
            one.defrost()
            one.DATASETS.TEST = (name,)
            one.MODEL.POMP.TEST_VOCABULARIES = cfg.MODEL.POMP.TEST_VOCABULARIES[index : index + 1]
            one.MODEL.TEST_CLASSIFIERS = cfg.MODEL.TEST_CLASSIFIERS[index : index + 1]
            one.MODEL.TEST_NUM_CLASSES = cfg.MODEL.TEST_NUM_CLASSES[index : index + 1]
            set_test_classifier(model, one, 0)
            results[name] = super().test(one, model, evaluators[index : index + 1] if evaluators else None)
        set_test_classifier(model, cfg, None)
        return results if len(results) > 1 else next(iter(results.values()))


def parse_args(argv=None):
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument(
        "--zoo-config",
        default=None,
        metavar="NAME",
        help="a detectron2 model zoo config (e.g. COCO-InstanceSegmentation/"
        "mask_rcnn_R_50_FPN_3x.yaml) merged before --config-file",
    )
    parser.add_argument(
        "--dataset",
        nargs=4,
        action="append",
        default=[],
        metavar=("NAME", "FORMAT", "JSON", "IMAGE_ROOT"),
        help=f"register a dataset (FORMAT: {', '.join(DATASET_FORMATS)}); repeatable",
    )
    parser.add_argument(
        "--test-vocabulary",
        default=None,
        metavar="SPEC",
        help=f"inference classes (sets MODEL.POMP.TEST_VOCABULARY): {VOCABULARY_SPEC_HELP}",
    )
    add_output_argument(
        parser, "folder for checkpoints, logs and evaluation results (sets OUTPUT_DIR; default: the config's)", False
    )
    add_device_argument(parser, " (sets MODEL.DEVICE)")
    return parser.parse_args(argv)


def setup(args) -> CfgNode:
    cfg = get_cfg()
    add_pomp_config(cfg)
    if args.zoo_config:
        cfg.merge_from_file(model_zoo.get_config_file(args.zoo_config))
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    if args.output is not None:
        cfg.OUTPUT_DIR = args.output
    cfg.MODEL.DEVICE = resolve_device(args.device)
    cfg.merge_from_list(args.opts)
    cfg = use_pomp_names(cfg)  # Detic's registered names (and stock ROI heads with USE_ZEROSHOT_CLS) -> ours
    for name, format, json_file, image_root in args.dataset:
        cfg.DATASETS.REGISTER[name] = CfgNode({"FORMAT": format, "JSON": json_file, "IMAGE_ROOT": image_root})
    if args.test_vocabulary is not None:
        cfg.MODEL.POMP.TEST_VOCABULARY = args.test_vocabulary
    cfg.freeze()
    default_setup(cfg, args)
    register_datasets_from_config(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None) -> int:
    args = parse_args(argv)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(cli))
