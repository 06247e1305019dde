"""Loading CLIP models through open_clip, with the right activation and clear errors when weights cannot be served.

Importing this module registers the tiny ``pomp-tiny`` config (2-layer towers, width 64, 32x32 images) with
open_clip, so tests and the demo can build a random-weight CLIP without any download.

OpenAI's CLIPs were trained with QuickGELU, open_clip's own configs use GELU: the same weights give other
embeddings under the other activation. ``load_clip`` picks QuickGELU for OpenAI weights however they come (the
``openai`` tag, OpenAI's TorchScript archive, a state dict with OpenAI's key layout), and when a plain weights
file cannot tell, the activation the caller's prompt was trained with; it says which it chose and why.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import QuickGELU
from torch import nn

TINY_MODEL = "pomp-tiny"
open_clip.add_model_config(Path(__file__).parent / "model_configs")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Entries of OpenAI's TorchScript state dicts that no open_clip model has: a state dict saved from OpenAI's
# archive (``torch.jit.load(...).state_dict()``) still carries them.
OPENAI_STATE_KEYS = ("input_resolution", "context_length", "vocab_size")
_WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".tar")

logger = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """CLIP weights were asked for but cannot be read or fetched here."""


@dataclass
class LoadedClip:
    """A frozen CLIP with what is needed to use it.

    ``model`` is an open_clip ``CLIP``/``CustomTextCLIP`` in eval mode with ``requires_grad=False`` everywhere;
    ``preprocess`` maps a PIL image to a normalised ``[3, H, W]`` float tensor at the model's resolution;
    ``name``/``pretrained`` identify the weights (``pretrained`` is ``None`` for random weights);
    ``logit_scale`` is CLIP's learned temperature, exp'ed, read in fp32 before any cast (about 100 for OpenAI);
    ``quick_gelu`` is the activation the model runs with, ``activation`` says why it was chosen.
    """

    model: nn.Module
    preprocess: Callable
    name: str
    pretrained: str | None
    logit_scale: float
    quick_gelu: bool = False
    activation: str = ""

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return size[0] if isinstance(size, (tuple, list)) else int(size)

    def pixel_mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP's per-channel ``mean`` and ``std`` ``[3, 1, 1]`` float32 for RGB in 0..1 (open_clip's preprocess
        config of this model)."""
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        return torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images ``[..., 3, H, W]`` in 0..255 (any dtype) -> CLIP's normalised input, float32, same device:
        ``(images / 255 - mean) / std``, as ``preprocess`` does after its resize and crop."""
        mean, std = (t.to(images.device) for t in self.pixel_mean_std())
        return (images.float() / 255.0 - mean) / std

    def describe(self) -> str:
        """One line for logs: model, weights and activation, e.g. ``ViT-B-16, weights openai, QuickGELU (...)``."""
        return f"CLIP {self.name}, weights {self.pretrained or 'random'}, {self.activation}"


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """``"auto"`` is bf16 on CUDA and fp32 elsewhere; otherwise one of fp32/bf16/fp16 or a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


def normalize_pretrained(pretrained: str | None) -> str | None:
    """``None``, ``""`` and ``"none"`` (any case, as configs and command lines write it) all mean random weights."""
    if pretrained is None or str(pretrained).strip().lower() in ("", "none"):
        return None
    return str(pretrained)


def _is_torchscript_archive(path: str) -> bool:
    """OpenAI's released ``.pt`` files are TorchScript archives; they hold code, not a plain state dict."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _read_state_dict(path: str) -> dict | None:
    """The state dict of a plain ``torch.save`` weights file (``None`` for other formats), unwrapped as open_clip
    does (a ``state_dict`` entry, a DDP ``module.`` prefix). Memory-mapped where the format allows."""
    if path.endswith((".safetensors", ".npz", ".npy")):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise WeightsUnavailableError(f"CLIP weights file {path!r} holds no state dict")
    if next(iter(checkpoint)).startswith("module."):
        checkpoint = {key[len("module.") :]: value for key, value in checkpoint.items()}
    return checkpoint


def _uses_quick_gelu(model: nn.Module) -> bool:
    return any(isinstance(module, QuickGELU) for module in model.modules())


def load_clip(
    name: str = "ViT-B-16",
    pretrained: str | None = "openai",
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    cache_dir: str | None = None,
    seed: int = 0,
    quick_gelu: bool | None = None,
    prompt_quick_gelu: bool | None = None,
) -> LoadedClip:
    """Build an open_clip model, load its weights and freeze it.

    Args:
        name: any open_clip model name (``open_clip.list_models()``), e.g. ``ViT-B-16`` or ``pomp-tiny``.
        pretrained: an open_clip tag (``openai``, ``laion2b_s34b_b88k``...), a local weights file, or ``None`` /
            ``"none"`` for random weights.
        device: where the model lives.
        dtype: precision of the frozen weights: ``auto`` (bf16 on CUDA, fp32 otherwise), fp32, bf16 or fp16.
        cache_dir: open_clip's download cache.
        seed: random weights (``pretrained=None``) are drawn from this seed, so every process that asks for
            the same random model gets the same weights (and the same cached embeddings); the global RNG is
            left untouched.
        quick_gelu: force QuickGELU (``True``) or GELU (``False``); ``None`` decides from the weights: the tag's
            open_clip config, a ``-quickgelu`` model name, OpenAI's TorchScript archive or OpenAI's state-dict
            layout mean QuickGELU; a plain state dict that shows none of these takes ``prompt_quick_gelu`` (the
            activation a prompt was trained with) if given, else GELU, with a warning.
        prompt_quick_gelu: see ``quick_gelu``.

    Raises:
        WeightsUnavailableError: the file does not exist, or the tag is neither cached nor downloadable.
        ValueError: an unknown model name or tag.
    """
    name = name.replace("/", "-")
    if name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP model {name!r}; open_clip knows: {', '.join(open_clip.list_models())}")
    pretrained = normalize_pretrained(pretrained)

    state_dict = None  # set when we load a local state dict ourselves (OpenAI's layout)
    weights_only = True
    detected, why = None, ""
    if pretrained is None:
        detected, why = None, "random weights"
    elif open_clip.get_pretrained_cfg(name, pretrained):
        detected = bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
        why = f"open_clip's config of the {pretrained!r} weights"
    elif os.path.sep in pretrained or pretrained.endswith(_WEIGHTS_SUFFIXES) or os.path.isfile(pretrained):
        if not os.path.isfile(pretrained):
            raise WeightsUnavailableError(f"CLIP weights file {pretrained!r} does not exist")
        if _is_torchscript_archive(pretrained):
            # OpenAI's TorchScript archives need the full unpickler; a user-given local file is trusted.
            detected, why, weights_only = True, "OpenAI's TorchScript archive", False
        else:
            state_dict = _read_state_dict(pretrained)
            if state_dict is not None and any(key in state_dict for key in OPENAI_STATE_KEYS):
                detected, why = True, f"OpenAI's state-dict layout ({', '.join(OPENAI_STATE_KEYS)} entries)"
            else:
                state_dict = None  # open_clip reads the file itself
    elif pretrained == "auto":
        raise ValueError("pretrained='auto' means 'the weights a prompt file records': use load_for_prompt")
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"{pretrained!r} is neither a weights file nor a tag of {name}; its tags: {tags}")

    if quick_gelu is not None:
        choice, why = quick_gelu, "asked for"
    elif name.endswith("-quickgelu"):
        choice, why = True, f"the {name} config"
    elif detected is not None:
        choice = detected
    elif pretrained is not None and prompt_quick_gelu is not None:
        choice, why = prompt_quick_gelu, "the activation the prompt was trained with; the weights file cannot tell"
    else:
        choice = False
        if pretrained is not None:
            why = "open_clip's default; the weights file shows no sign of OpenAI"
            logger.warning(
                "CLIP weights %s: cannot tell from the file whether these are OpenAI weights; using "
                "GELU. If they are, use the model name %s-quickgelu (or quick_gelu=True).",
                pretrained,
                name,
            )

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=None if state_dict is not None else pretrained,
                device=device,
                force_quick_gelu=choice,
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
    if state_dict is not None:
        state_dict = {key: value for key, value in state_dict.items() if key not in OPENAI_STATE_KEYS}
        model.load_state_dict(state_dict, strict=True)

    actual = _uses_quick_gelu(model)
    activation = f"{'QuickGELU' if actual else 'GELU'} ({why})" if why else ("QuickGELU" if actual else "GELU")
    logger.info("CLIP %s, weights %s: %s", name, pretrained or "random", activation)
    logit_scale = float(model.logit_scale.detach().float().exp())
    model = model.to(dtype=resolve_dtype(dtype, device)).eval().requires_grad_(False)
    return LoadedClip(model, preprocess, name, pretrained, logit_scale, actual, activation)
