"""Image features of CLIP's frozen image tower: L2-normalised ``[N, D]`` float32, optionally through
``torch.compile``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def model_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s (first) parameters, i.e. the dtype its inputs must have."""
    return next(module.parameters()).dtype


@torch.no_grad()
def image_features(
    model: nn.Module, images: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> torch.Tensor:
    """L2-normalised image features ``[N, D]`` float32 of normalised images ``[N, 3, H, W]`` (any float dtype).

    ``encode`` replaces ``model.encode_image`` (e.g. a ``torch.compile``d one).
    """
    return F.normalize((encode or model.encode_image)(images.to(model_dtype(model.visual))).float(), dim=-1)


def compiled_image_encoder(model: nn.Module, fall_back: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.encode_image`` through ``torch.compile`` (static shapes; a new batch size compiles again).

    With ``fall_back``, a failing compile makes the calls run eagerly (dynamo's ``suppress_errors``, with a
    warning); without, the first call raises.
    """
    if fall_back:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True
    return torch.compile(model.encode_image, dynamic=False)
