"""Detic's zero-shot box classifier, with the same state-dict keys: ``linear``, ``zs_weight``, ``cls_bias``.

``logits = T * normalize(linear(x)) @ zs_weight (+ cls_bias)`` where ``zs_weight`` ``[D, C + 1]`` holds the
L2-normalised class embeddings as columns plus a zero background column (Detic's ``NORM_WEIGHT``; without it
neither side is normalised nor scaled). ``zs_weight`` is a persistent buffer, as in Detic's checkpoints, but loading
a checkpoint keeps the configured one (Detic's ``RESET_CLS_TRAIN`` semantics: the classifier comes from the config,
a POMP prompt or an .npy, never from the checkpoint). An inference classifier (``set_test_class_embeddings``) is a
non-persistent buffer used in eval mode only.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from pomp_plugins.prompt import EmbeddingFileError, cosine_logits

# A child of detectron2's logger, so that its handlers (set up by detectron2's tools) show this plugin's messages.
logger = logging.getLogger("detectron2.pomp_plugins")


def zs_weight_matrix(class_embeddings: torch.Tensor, norm_weight: bool = True) -> torch.Tensor:
    """``[C, D]`` class embeddings (any norm) -> Detic's ``zs_weight`` ``[D, C + 1]`` float32: columns normalised
    (with ``norm_weight``), a zero last column for the background."""
    weight = class_embeddings.detach().float().t()
    weight = torch.cat([weight, weight.new_zeros(len(weight), 1)], dim=1)
    return F.normalize(weight, p=2, dim=0) if norm_weight else weight


class ZeroShotBoxClassifier(nn.Module):
    """Region features ``[R, in_features]`` -> logits ``[R, C + 1]`` (last column: background, constant 0 + bias)."""

    def __init__(
        self,
        in_features: int,
        class_embeddings: torch.Tensor | None,
        *,
        dim: int = 512,
        num_classes: int | None = None,
        norm_weight: bool = True,
        norm_temperature: float = 50.0,
        use_bias: float = 0.0,
    ):
        """
        Args:
            in_features: size of a flattened region feature.
            class_embeddings: ``[C, D]`` text embeddings of the training classes, any norm; ``None`` = Detic's
                ``"rand"``: a learned ``zs_weight`` parameter ``N(0, 0.01)`` for ``num_classes`` classes.
            dim: ``D`` (Detic's ``ZEROSHOT_WEIGHT_DIM``).
            norm_weight: Detic's ``NORM_WEIGHT``: cosine similarity times ``norm_temperature``.
            use_bias: Detic's ``USE_BIAS``: a value < 0 adds a learned scalar to every logit, initialised to it.
        """
        super().__init__()
        self.norm_weight = norm_weight
        self.norm_temperature = norm_temperature
        self.linear = nn.Linear(in_features, dim)
        if use_bias < 0:
            self.cls_bias = nn.Parameter(torch.ones(1) * use_bias)
        else:
            self.cls_bias = None
        if class_embeddings is None:
            if num_classes is None:
                raise ValueError("a learned ('rand') classifier needs num_classes")
            self.zs_weight = nn.Parameter(zs_weight_matrix(torch.randn(num_classes, dim) * 0.01, norm_weight))
        else:
            if class_embeddings.shape[1] != dim:
                raise EmbeddingFileError(
                    f"class embeddings are {class_embeddings.shape[1]}-d, the classifier expects {dim}"
                )
            self.register_buffer("zs_weight", zs_weight_matrix(class_embeddings, norm_weight))
        self.register_buffer("test_zs_weight", None, persistent=False)
        self._register_load_state_dict_pre_hook(self._keep_configured_classifier)

    @property
    def num_classes(self) -> int:
        """Number of training classes."""
        return self.zs_weight.shape[1] - 1

    @property
    def num_test_classes(self) -> int:
        return self.num_classes if self.test_zs_weight is None else self.test_zs_weight.shape[1] - 1

    @property
    def dim(self) -> int:
        return self.zs_weight.shape[0]

    def set_test_class_embeddings(self, class_embeddings: torch.Tensor | None) -> None:
        """Classify against ``class_embeddings`` ``[C', D]`` in eval mode (``None``: the training classes)."""
        if class_embeddings is None:
            self.test_zs_weight = None
            return
        if class_embeddings.shape[1] != self.dim:
            raise EmbeddingFileError(
                f"test class embeddings are {class_embeddings.shape[1]}-d, the classifier's {self.dim}"
            )
        self.test_zs_weight = zs_weight_matrix(class_embeddings, self.norm_weight).to(self.zs_weight.device)

    def forward(self, x: torch.Tensor, classifier: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[R, in_features]``; ``classifier``: optional ``[C', D]`` to use instead (Detic's argument)."""
        x = self.linear(x)
        if classifier is not None:
            zs_weight = classifier.t()
            zs_weight = F.normalize(zs_weight, p=2, dim=0) if self.norm_weight else zs_weight
        elif not self.training and self.test_zs_weight is not None:
            zs_weight = self.test_zs_weight
        else:
            zs_weight = self.zs_weight
        if self.norm_weight:  # zs_weight's columns are unit (or zero: the background) vectors
            logits = cosine_logits(x, zs_weight.t(), self.norm_temperature)
        else:
            logits = x @ zs_weight.to(x.dtype)
        return logits + self.cls_bias if self.cls_bias is not None else logits

    def _keep_configured_classifier(self, state_dict, prefix, *args) -> None:
        key = prefix + "zs_weight"
        if isinstance(self.zs_weight, nn.Parameter) or key not in state_dict:
            return
        loaded = state_dict[key]
        if loaded.shape == self.zs_weight.shape and torch.equal(loaded.to(self.zs_weight), self.zs_weight):
            return
        logger.info(
            f"{key}: keeping the configured classifier ({self.num_classes} classes); the checkpoint's "
            f"{tuple(loaded.shape)} zs_weight is not loaded"
        )
        state_dict[key] = self.zs_weight.detach().clone()
