"""One POMP optimisation step: local contrast over K sampled classes, local correction, SGD on ``ctx``.

This is the step both the trainer and ``bench/pretrain_step.py`` run. What makes it lean, all exact:
- the frozen image tower runs under ``no_grad`` in bf16 (no activations kept);
- the batch's positives and the sampled negatives are encoded once per distinct class (not once per view);
- the text tower shares the ``[SOT] ctx`` prefix across prompts and packs the name tokens without padding
  (``PromptedTextEncoder``), with the index work done on the CPU before the step's device work
  (``PompStep.prepare``), so nothing in the step waits for the device;
- only ``ctx`` (fp32) requires grad, so the backward pass computes activation gradients, never weight gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..prompt.loss import LocalContrastPlan, plan_local_contrast, pomp_loss, sample_negatives
from ..prompt.text_encoder import PackedPrompts, PromptedTextEncoder, TokenizedPrompts
from .data import NEGATIVES, derive_seed


def step_negatives(num_classes: int, num_sampled: int, seed: int, rank: int, step: int) -> torch.Tensor:
    """The ``[K-1]`` negatives of ``step`` on ``rank``: from a seed derived from ``(seed, rank, step)``."""
    generator = torch.Generator().manual_seed(derive_seed(seed, NEGATIVES, rank, step))
    return sample_negatives(num_classes, num_sampled, generator)


@dataclass
class StepInputs:
    """The host-side part of a step, done before any device work so the step never waits on the device:
    ``plan`` (which classes to encode, on the device) and ``prompts`` (their packed prompts, on the device)."""

    plan: LocalContrastPlan
    prompts: PackedPrompts

    @property
    def rows(self) -> int:
        return len(self.plan.labels)


class PompStep:
    """Loss, backward and optimiser step for one batch of image features.

    Args:
        encoder: the prompted text encoder; its ``ctx`` is what ``optimizer`` updates.
        class_prompts: tokenized prompts of all N classes (``encoder.tokenize(names, device="cpu")``); on the CPU,
            selecting and packing a step's prompts costs the device nothing.
        logit_scale: CLIP's frozen temperature.
        num_sampled: K, classes per step.
        log_base: base of the correction margin's log (``None``: no correction).
        optimizer: over ``[encoder.ctx]``.
        sync_gradients: called with the local number of feature rows after backward (and with 0 when this
            process had no rows); it must make ``ctx.grad`` the global mean and return the global row count.
    """

    def __init__(
        self,
        encoder: PromptedTextEncoder,
        class_prompts: TokenizedPrompts,
        logit_scale: float,
        num_sampled: int,
        log_base: Optional[float],
        optimizer: torch.optim.Optimizer,
        sync_gradients: Optional[Callable[[int], int]] = None,
    ):
        self.encoder, self.class_prompts, self.logit_scale = encoder, class_prompts, logit_scale
        self.num_sampled, self.log_base, self.optimizer = num_sampled, log_base, optimizer
        self.sync_gradients = sync_gradients

    @property
    def num_classes(self) -> int:
        return len(self.class_prompts)

    def prepare(self, labels: torch.Tensor, negatives: torch.Tensor) -> StepInputs:
        """Plan the step for ``labels`` ``[R]`` (one per feature row) and ``negatives`` ``[K-1]``, best on the CPU."""
        plan = plan_local_contrast(labels, negatives)
        prompts = self.encoder.pack(self.class_prompts.select(plan.classes.to(self.class_prompts.ids.device)))
        return StepInputs(plan.to(self.encoder.ctx.device), prompts)

    def loss(self, image_features: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
        """Scalar loss of normalised ``image_features`` ``[R, D]`` (row ``i`` has label ``inputs.plan.labels[i]``)."""
        text = F.normalize(self.encoder(inputs.prompts), dim=-1)
        return pomp_loss(image_features, text, inputs.plan, self.logit_scale, self.num_classes, self.log_base)

    def __call__(self, image_features: torch.Tensor, inputs: StepInputs) -> Optional[torch.Tensor]:
        """Update ``ctx`` from one batch; returns the detached loss (``None`` if this process had no rows)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = None
        if inputs.rows:
            loss = self.loss(image_features, inputs)
            loss.backward()
        elif self.sync_gradients is not None:
            self.encoder.ctx.grad = torch.zeros_like(self.encoder.ctx)
        total = self.sync_gradients(inputs.rows) if self.sync_gradients is not None else inputs.rows
        if total:
            self.optimizer.step()
        return None if loss is None else loss.detach()
