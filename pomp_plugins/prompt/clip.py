"""Loading CLIP models through open_clip, with clear errors when weights cannot be served.

Importing this module registers the tiny ``pomp-tiny`` config (2-layer towers, width 64, 32x32 images) with
open_clip, so tests and the demo can build a random-weight CLIP without any download.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import open_clip
import torch
from torch import nn

TINY_MODEL = "pomp-tiny"
open_clip.add_model_config(Path(__file__).parent / "model_configs")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class WeightsUnavailableError(RuntimeError):
    """CLIP weights were asked for but cannot be read or fetched here."""


@dataclass
class LoadedClip:
    """A frozen CLIP with what is needed to use it.

    ``model`` is an open_clip ``CLIP``/``CustomTextCLIP`` in eval mode with ``requires_grad=False`` everywhere;
    ``preprocess`` maps a PIL image to a normalised ``[3, H, W]`` float tensor at the model's resolution;
    ``name``/``pretrained`` identify the weights (``pretrained`` is ``None`` for random weights);
    ``logit_scale`` is CLIP's learned temperature, exp'ed, read in fp32 before any cast (about 100 for OpenAI).
    """

    model: nn.Module
    preprocess: Callable
    name: str
    pretrained: Optional[str]
    logit_scale: float

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """``"auto"`` is bf16 on CUDA and fp32 elsewhere; otherwise one of fp32/bf16/fp16 or a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


def _is_torchscript_archive(path: str) -> bool:
    """OpenAI's released ``.pt`` files are TorchScript archives; they hold code, not a plain state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_clip(
    name: str = "ViT-B-16",
    pretrained: Optional[str] = "openai",
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    cache_dir: Optional[str] = None,
    seed: int = 0,
) -> LoadedClip:
    """Build an open_clip model, load its weights and freeze it.

    Args:
        name: any open_clip model name (``open_clip.list_models()``), e.g. ``ViT-B-16`` or ``pomp-tiny``.
        pretrained: an open_clip tag (``openai``, ``laion2b_s34b_b88k``...), a local weights file, or ``None``
            for random weights. OpenAI weights (tag ``openai`` or a TorchScript ``.pt`` file) use QuickGELU.
        device: where the model lives.
        dtype: precision of the frozen weights: ``auto`` (bf16 on CUDA, fp32 otherwise), fp32, bf16 or fp16.
        cache_dir: open_clip's download cache.
        seed: random weights (``pretrained=None``) are drawn from this seed, so every process that asks for
            the same random model gets the same weights (and the same cached embeddings); the global RNG is
            left untouched.

    Raises:
        WeightsUnavailableError: the file does not exist, or the tag is neither cached nor downloadable.
        ValueError: an unknown model name or tag.
    """
    name = name.replace("/", "-")
    if name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP model {name!r}; open_clip knows: {', '.join(open_clip.list_models())}")

    quick_gelu = False
    weights_only = True
    if pretrained:
        if open_clip.get_pretrained_cfg(name, pretrained):
            quick_gelu = bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
        elif os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz")):
            if not os.path.isfile(pretrained):
                raise WeightsUnavailableError(f"CLIP weights file {pretrained!r} does not exist")
            # OpenAI's TorchScript archives need the full unpickler; a user-given local file is trusted.
            is_openai_archive = _is_torchscript_archive(pretrained)
            quick_gelu, weights_only = is_openai_archive, not is_openai_archive
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ValueError(f"{pretrained!r} is neither a weights file nor a tag of {name}; its tags: {tags}")

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=pretrained or None,
                device=device,
                force_quick_gelu=quick_gelu,
                cache_dir=cache_dir,
                weights_only=weights_only,
            )
    except RuntimeError as error:
        if pretrained and not os.path.isfile(pretrained):
            raise WeightsUnavailableError(
                f"could not get CLIP weights {name}/{pretrained}: {error}\n"
                "This machine may have no access to the model hub. Download the weights where you can and pass "
                "the local file instead (--clip-pretrained /path/to/weights.pt), or put them in the hub cache; "
                "set HF_HUB_OFFLINE=1 to fail fast instead of waiting for the network."
            ) from error
        raise

    logit_scale = float(model.logit_scale.detach().float().exp())
    model = model.to(dtype=resolve_dtype(dtype, device)).eval().requires_grad_(False)
    return LoadedClip(model, preprocess, name, pretrained or None, logit_scale)
