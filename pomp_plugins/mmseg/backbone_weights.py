"""ZSSeg's backbone weights for mmseg: detectron2 ResNet names -> mmseg ``ResNetV1c`` names.

ZSSeg initialises its "R101c" from detectron2's ``DeepLab/R-103.pkl`` (ImageNet; a DeepLab stem of three 3x3 convs
with 128 output channels). In mmseg that backbone is ``ResNetV1c(depth=101, stem_channels=128, multi_grid=(1, 2,
4))``; this module renames such a detectron2 state dict to it, so the configs can start where ZSSeg starts::

    python -m pomp_plugins.mmseg.backbone_weights R-103.pkl r101c_deeplab_mmseg.pth
    # then: model.pretrained='r101c_deeplab_mmseg.pth' (or backbone.init_cfg=dict(type='Pretrained', ...))

detectron2 checkpoints are pickles of ``{"model": {name: ndarray}}`` (its ``.pkl`` format) or torch files with a
``model`` / ``state_dict`` entry; a ``backbone.`` prefix and the classifier (``fc``/``linear``) are dropped.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

_NORM = ("weight", "bias", "running_mean", "running_var")
_STEM = {"conv1": 0, "conv2": 3, "conv3": 6}  # the DeepLab stem: conv, BN, ReLU three times
_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.(conv[123]|shortcut)(\.norm)?\.(\w+)$")
_STEM_KEY = re.compile(r"^stem\.(conv[123])(\.norm)?\.(\w+)$")


def mmseg_name(name: str) -> str:
    """The ``ResNetV1c`` name of detectron2 ResNet parameter ``name`` (e.g. ``res5.2.conv2.norm.running_var`` ->
    ``layer4.2.bn2.running_var``).

    Raises:
        KeyError: a name that is not part of a detectron2 ResNet with a DeepLab stem.
    """
    stem = _STEM_KEY.match(name)
    if stem:
        conv, norm, field = stem.groups()
        if (field not in _NORM) if norm else field != "weight":
            raise KeyError(name)
        return f"stem.{_STEM[conv] + bool(norm)}.{field}"
    block = _BLOCK.match(name)
    if not block:
        raise KeyError(name)
    stage, index, conv, norm, field = block.groups()
    if (field not in _NORM) if norm else field != "weight":
        raise KeyError(name)
    layer = f"layer{int(stage) - 1}.{index}"
    if conv == "shortcut":
        return f"{layer}.downsample.{1 if norm else 0}.{field}"
    return f"{layer}.{'bn' + conv[-1] if norm else conv}.{field}"


def convert_state_dict(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """A detectron2 ResNet state dict (tensors or arrays) as ``ResNetV1c`` tensors (float32 for floats).

    Raises:
        KeyError: names that are not a DeepLab-stem ResNet's (all of them are listed).
    """
    converted, unknown = {}, []
    for name, value in state.items():
        name = name[len("backbone.") :] if name.startswith("backbone.") else name
        if name.split(".")[0] in ("fc", "linear") or name.endswith("num_batches_tracked"):
            continue
        try:
            target = mmseg_name(name)
        except KeyError:
            unknown.append(name)
            continue
        tensor = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        converted[target] = tensor.float() if tensor.is_floating_point() else tensor
    if unknown:
        raise KeyError(f"not a detectron2 ResNet with a DeepLab stem: {len(unknown)} unknown names, e.g. {unknown[:5]}")
    return converted


def read_detectron2_checkpoint(path: str | Path) -> Mapping[str, object]:
    """The parameter dict of a detectron2 ``.pkl`` (``{"model": ...}``) or a torch checkpoint."""
    path = Path(path)
    if path.suffix == ".pkl":
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(data, Mapping) and key in data:
            data = data[key]
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="detectron2 checkpoint (.pkl or torch file), e.g. R-103.pkl")
    parser.add_argument("output", help="mmseg backbone checkpoint to write (.pth)")
    args = parser.parse_args(argv)
    state = convert_state_dict(read_detectron2_checkpoint(args.source))
    torch.save({"state_dict": state}, args.output)
    print(json.dumps({"output": args.output, "tensors": len(state)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
