"""One POMP optimisation step: local contrast over K sampled classes, local correction, SGD on ``ctx``.

This is the step both the trainer and ``bench/pretrain_step.py`` run. What makes it lean, all exact:
- the frozen image tower runs under ``no_grad`` in bf16 (no activations kept);
- the batch's positives and the sampled negatives are encoded once per distinct class (not once per view);
- the text tower shares the ``[SOT] ctx`` prefix across prompts and packs the name tokens without padding
  (``PromptedTextEncoder``), with the index work done on the CPU before the step's device work
  (``PompStep.prepare``), so nothing in the step waits for the device;
- only ``ctx`` (fp32) requires grad, so the backward pass computes activation gradients, never weight gradients;
- with ``cuda_graphs``, groups have one of a few shapes (as many prompt rows as a group can need, packed tokens
  padded to a multiple of ``TOKEN_BUCKET``), and a group's forward and backward are one CUDA-graph replay instead
  of thousands of kernel launches.

A step is one or more *groups* (``accumulate`` each, then ``apply``): a group is the reference's per-GPU batch,
whose images share their own K-1 sampled negatives; the gradients of all groups of the step (on all processes)
are averaged in one persistent buffer (``GradientBuffer``) before the optimiser step.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from ..images.features import image_features
from ..prompt.loss import LocalContrastPlan, plan_local_contrast, pomp_loss, sample_negatives
from ..prompt.packed_attention import PackedPrompts, scratch_rows
from ..prompt.text_encoder import PromptedTextEncoder
from ..prompt.tokenization import TokenizedPrompts
from .cuda_graphs import CapturedFunction
from .data import NEGATIVES, derive_seed
from .gradient import GradientBuffer

# Packed prompt tokens are padded to a multiple of this, so a few shapes (CUDA graphs) cover all steps.
TOKEN_BUCKET = 256


def tensor_fields(cls: type) -> tuple[str, ...]:
    """The names of dataclass ``cls``'s fields declared ``torch.Tensor``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple(field.name for field in fields(cls) if hints[field.name] is torch.Tensor)


# The flat layout of a group's inputs for the captured function (CUDA graphs take tensors only): the plan's tensor
# fields, then the token ids', then the packed layout's, each in the order its dataclass declares them.
PLAN_TENSORS = tensor_fields(LocalContrastPlan)
TOKEN_TENSORS = tensor_fields(TokenizedPrompts)
PACKED_TENSORS = tensor_fields(PackedPrompts)


def group_negatives(num_classes: int, num_sampled: int, seed: int, step: int, group: int) -> torch.Tensor:
    """The ``[K-1]`` negatives of group ``group`` (0-based within the step, over all processes) of global step
    ``step``: from a seed derived from ``(seed, step, group)``, so they do not depend on which process runs it."""
    generator = torch.Generator().manual_seed(derive_seed(seed, NEGATIVES, step, group))
    return sample_negatives(num_classes, num_sampled, generator)


def image_feature_function(
    model: torch.nn.Module, encode: Callable[[torch.Tensor], torch.Tensor] | None = None, cuda_graphs: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Normalised images ``[R, 3, H, W]`` -> normalised features ``[R, D]`` float32 of the frozen image tower.

    ``encode`` replaces ``model.encode_image`` (e.g. compiled); with ``cuda_graphs`` the forward is replayed as a
    CUDA graph per batch shape, and the returned tensor is overwritten by the next call.
    """

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return image_features(model, images, encode)

    return CapturedFunction(forward) if cuda_graphs else forward


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
    """Loss and gradient of groups of image features, accumulated, then one SGD step on ``ctx``.

    Args:
        encoder: the prompted text encoder; its ``ctx`` is what ``optimizer`` updates.
        class_prompts: tokenized prompts of all N classes (``encoder.tokenize(names, device="cpu")``); on the CPU,
            selecting and packing a group's prompts costs the device nothing.
        logit_scale: CLIP's frozen temperature.
        num_sampled: K, classes per group.
        log_base: base of the correction margin's log (``None``: no correction).
        optimizer: over ``[encoder.ctx]``; it reads ``ctx.grad``, which is this step's ``GradientBuffer``.
        all_reduce_: sums a tensor in place over all processes (``None``: one process).
        cuda_graphs: give groups one of a few shapes (``PackedPrompts.fixed``: ``num_sampled - 1 + max_positives``
            prompt rows, packed tokens padded to a multiple of ``TOKEN_BUCKET``) and, on a CUDA device, replay
            each group's forward and backward as a CUDA graph per shape. On a CPU the fixed-shape layout runs
            eagerly (the tests use this).
        max_positives: the most distinct labels a group can hold (its images); default: its feature rows.
    """

    def __init__(
        self,
        encoder: PromptedTextEncoder,
        class_prompts: TokenizedPrompts,
        logit_scale: float,
        num_sampled: int,
        log_base: float | None,
        optimizer: torch.optim.Optimizer,
        all_reduce_: Callable[[torch.Tensor], object] | None = None,
        cuda_graphs: bool = False,
        max_positives: int | None = None,
    ):
        self.encoder, self.class_prompts, self.logit_scale = encoder, class_prompts, logit_scale
        self.num_sampled, self.log_base, self.optimizer = num_sampled, log_base, optimizer
        self.all_reduce_ = all_reduce_
        self.fixed_shapes, self.max_positives = cuda_graphs, max_positives
        self.suffix_length = int(class_prompts.eot.max()) - encoder.n_ctx  # name tokens up to every class's EOT
        self.gradient = GradientBuffer(encoder.ctx)
        self.captured = None
        if cuda_graphs and encoder.ctx.is_cuda:
            if not encoder.tower.packable:
                raise ValueError("CUDA graphs need open_clip's standard text blocks (the packed path)")
            self.captured = CapturedFunction(self._flat_loss_and_gradient)

    @property
    def num_classes(self) -> int:
        return len(self.class_prompts)

    @property
    def captured_shapes(self) -> int:
        """How many CUDA graphs (group shapes) have been captured so far (0 without CUDA graphs)."""
        return 0 if self.captured is None else len(self.captured.graphs)

    def prepare(self, labels: torch.Tensor, negatives: torch.Tensor) -> StepInputs:
        """Plan a group for ``labels`` ``[R]`` (one per feature row) and ``negatives`` ``[K-1]``, best on the CPU."""
        plan = plan_local_contrast(labels, negatives)
        selected = self.class_prompts.select(plan.classes.to(self.class_prompts.ids.device))
        if not self.fixed_shapes:
            return StepInputs(plan.to(self.encoder.ctx.device), self.encoder.pack(selected))
        rows = min(self.num_classes, len(negatives) + (self.max_positives or len(labels)))
        prompts = PackedPrompts.fixed(selected, 1 + self.encoder.n_ctx, rows, self.suffix_length, TOKEN_BUCKET)
        prompts = prompts.to(self.encoder.ctx.device)
        padding = plan.classes[:1].expand(rows - len(plan.classes))  # the classes of the padded prompt rows
        plan = replace(plan, classes=torch.cat([plan.classes, padding]))
        return StepInputs(plan.to(self.encoder.ctx.device), prompts)

    def loss(self, image_features: torch.Tensor, inputs: StepInputs) -> torch.Tensor:
        """Scalar loss of normalised ``image_features`` ``[R, D]`` (row ``i`` has label ``inputs.plan.labels[i]``)."""
        text = F.normalize(self.encoder(inputs.prompts), dim=-1)
        return pomp_loss(image_features, text, inputs.plan, self.logit_scale, self.num_classes, self.log_base)

    def loss_and_gradient(self, image_features: torch.Tensor, inputs: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """A group's detached loss and its gradient w.r.t. ``ctx`` (returned, never written into ``ctx.grad``)."""
        loss = self.loss(image_features, inputs)
        (gradient,) = torch.autograd.grad(loss, self.encoder.ctx)
        return loss.detach(), gradient

    def _flat_loss_and_gradient(
        self, image_features: torch.Tensor, *tensors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``loss_and_gradient`` from flat tensors (``_flatten``'s order): the function CUDA graphs capture."""
        return self.loss_and_gradient(image_features, self._unflatten(tensors))

    @staticmethod
    def _flatten(inputs: StepInputs) -> list[torch.Tensor]:
        """The tensors of ``inputs`` in the flat layout (``PLAN_TENSORS``, ``TOKEN_TENSORS``, ``PACKED_TENSORS``)."""
        plan, packed = inputs.plan, inputs.prompts
        return [
            *(getattr(plan, name) for name in PLAN_TENSORS),
            *(getattr(packed.prompts, name) for name in TOKEN_TENSORS),
            *(getattr(packed, name) for name in PACKED_TENSORS),
        ]

    def _unflatten(self, tensors: Sequence[torch.Tensor]) -> StepInputs:
        """``_flatten``'s inverse for a fixed-shape layout; its other fields are the step's (prefix length) or follow
        from the shapes (attention rows)."""
        expected = len(PLAN_TENSORS) + len(TOKEN_TENSORS) + len(PACKED_TENSORS)
        if len(tensors) != expected:
            raise ValueError(f"{len(tensors)} flat tensors, but a step's inputs have {expected}")
        values = iter(tensors)
        plan = LocalContrastPlan(**{name: next(values) for name in PLAN_TENSORS})
        prompts = TokenizedPrompts(**{name: next(values) for name in TOKEN_TENSORS})
        packed = {name: next(values) for name in PACKED_TENSORS}
        attention_rows = len(packed["eot_rows"]) + scratch_rows(TOKEN_BUCKET, self.suffix_length)
        layout = PackedPrompts(
            prompts=prompts, num_prefix=1 + self.encoder.n_ctx, attention_rows=attention_rows, **packed
        )
        return StepInputs(plan, layout)

    def accumulate(self, image_features: torch.Tensor, inputs: StepInputs) -> torch.Tensor | None:
        """Add one group's gradient (weighted by its rows) to the step's buffer; returns its detached loss
        (``None`` for a group without rows)."""
        if not inputs.rows:
            return None
        if self.captured is not None:
            loss, gradient = self.captured(image_features, *self._flatten(inputs))
        else:
            loss, gradient = self.loss_and_gradient(image_features, inputs)
        self.gradient.add(gradient, inputs.rows)  # before the next replay, which may overwrite these outputs
        return loss.clone()

    def apply(self) -> int:
        """Average the accumulated gradient over all rows of all processes, step the optimiser (unless there were
        no rows at all), and clear the buffer for the next step. Returns the step's total rows."""
        total = self.gradient.average(self.all_reduce_)
        if total:
            self.optimizer.step()
        self.gradient.zero()
        return total

    def __call__(self, image_features: torch.Tensor, inputs: StepInputs) -> torch.Tensor | None:
        """A step of one group: ``accumulate`` then ``apply``; returns the detached loss."""
        loss = self.accumulate(image_features, inputs)
        self.apply()
        return loss
