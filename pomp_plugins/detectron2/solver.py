"""Detic's solver: its optimizer builder (SGD or AdamW, backbone LR multiplier, full-model gradient clipping) and
mixed-precision training steps that run on CUDA and on the CPU.

The LR schedule is detectron2's ``build_lr_scheduler`` (``WarmupCosineLR`` in Detic's recipes), as in Detic.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer
from detectron2.solver import build_optimizer as build_detectron2_optimizer
from detectron2.solver.build import _create_gradient_clipper, _generate_optimizer_class_with_gradient_clipping
from detectron2.utils.events import get_event_storage

from .config import PompConfigError

OPTIMIZERS = {"SGD": torch.optim.SGD, "ADAMW": torch.optim.AdamW}


def _with_full_model_clipping(optimizer_class: type, max_norm: float) -> type:
    """``optimizer_class`` whose ``step`` first clips the L2 norm of all its parameters' gradients together to
    ``max_norm`` (Detic's ``CLIP_TYPE: full_model``; detectron2's clipping works per parameter)."""

    def step(self, closure=None):
        torch.nn.utils.clip_grad_norm_(itertools.chain(*[g["params"] for g in self.param_groups]), max_norm)
        return optimizer_class.step(self, closure=closure)

    return type(optimizer_class.__name__ + "WithFullModelGradientClip", (optimizer_class,), {"step": step})


def add_per_parameter_clipping(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """detectron2's ``maybe_add_gradient_clipping`` (``CLIP_TYPE`` ``value`` or ``norm``, each parameter on its own,
    from detectron2's own clipper), except that a parameter without a gradient in a step is left alone: torch 2.14's
    ``clip_grad_value_`` raises on one (a box batch without boxes leaves some parameters without a gradient)."""
    if not cfg.SOLVER.CLIP_GRADIENTS.ENABLED:
        return optimizer
    clipper = _create_gradient_clipper(cfg.SOLVER.CLIP_GRADIENTS)

    def clip_if_it_has_a_gradient(parameter: torch.Tensor) -> None:
        if parameter.grad is not None:
            clipper(parameter)

    optimizer.__class__ = _generate_optimizer_class_with_gradient_clipping(
        type(optimizer), per_param_clipper=clip_if_it_has_a_gradient
    )
    return optimizer


def parameter_groups(cfg: CfgNode, model: torch.nn.Module) -> list[dict[str, Any]]:
    """One group per trainable parameter, as Detic's ``build_custom_optimizer``: ``lr`` = ``BASE_LR``, times
    ``BACKBONE_MULTIPLIER`` if its name contains "backbone", times ``CUSTOM_MULTIPLIER`` if it contains any of
    ``CUSTOM_MULTIPLIER_NAME``; SGD groups also carry ``weight_decay`` = ``WEIGHT_DECAY`` (AdamW takes it as its
    default, so norms and biases are decayed too, as in Detic)."""
    solver = cfg.SOLVER
    groups, seen = [], set()
    for name, value in model.named_parameters(recurse=True):
        if not value.requires_grad or value in seen:
            continue
        seen.add(value)
        lr = solver.BASE_LR
        if "backbone" in name:
            lr = lr * solver.BACKBONE_MULTIPLIER
        if any(keyword in name for keyword in solver.CUSTOM_MULTIPLIER_NAME):
            lr = lr * solver.CUSTOM_MULTIPLIER
        group = {"params": [value], "lr": lr}
        if solver.OPTIMIZER != "ADAMW":
            group["weight_decay"] = solver.WEIGHT_DECAY
        groups.append(group)
    return groups


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` as Detic's ``train_net.py`` builds it: with ``SOLVER.USE_CUSTOM_SOLVER`` Detic's
    builder (``OPTIMIZER`` SGD or ADAMW, ``parameter_groups``, ``CLIP_GRADIENTS`` of ``CLIP_TYPE`` ``full_model``
    over all parameters, other clip types per parameter as detectron2), else detectron2's ``build_optimizer``."""
    solver = cfg.SOLVER
    clip = solver.CLIP_GRADIENTS
    if not solver.USE_CUSTOM_SOLVER:
        custom = {
            "OPTIMIZER": solver.OPTIMIZER != "SGD",
            "BACKBONE_MULTIPLIER": solver.BACKBONE_MULTIPLIER != 1.0,
            "CLIP_GRADIENTS.CLIP_TYPE": clip.CLIP_TYPE == "full_model",
        }
        if any(custom.values()):
            raise PompConfigError(
                f"SOLVER.{[k for k, v in custom.items() if v]} need SOLVER.USE_CUSTOM_SOLVER True "
                "(Detic's optimizer builder)"
            )
        unclipped = cfg.clone()
        unclipped.defrost()
        unclipped.SOLVER.CLIP_GRADIENTS.ENABLED = False
        return add_per_parameter_clipping(cfg, build_detectron2_optimizer(unclipped, model))
    if solver.OPTIMIZER not in OPTIMIZERS:
        raise PompConfigError(f"SOLVER.OPTIMIZER {solver.OPTIMIZER!r} is not supported; use one of {list(OPTIMIZERS)}")
    optimizer_class = OPTIMIZERS[solver.OPTIMIZER]
    if clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0:
        optimizer_class = _with_full_model_clipping(optimizer_class, clip.CLIP_VALUE)
    groups = parameter_groups(cfg, model)
    if solver.OPTIMIZER == "SGD":
        optimizer = optimizer_class(groups, solver.BASE_LR, momentum=solver.MOMENTUM, nesterov=solver.NESTEROV)
    else:
        optimizer = optimizer_class(groups, solver.BASE_LR, weight_decay=solver.WEIGHT_DECAY)
    if clip.CLIP_TYPE != "full_model":
        optimizer = add_per_parameter_clipping(cfg, optimizer)
    return optimizer


class MixedPrecisionTrainer(AMPTrainer):
    """detectron2's ``AMPTrainer`` on any device: a ``GradScaler`` for the loss, and the forward pass under
    ``torch.autocast`` of the model's device (CUDA or CPU) unless ``autocast_forward`` is False.

    ``SOLVER.AMP.ENABLED`` = detectron2's AMP (the whole forward autocast); Detic's ``FP16`` = the loss scaler only
    (Detic's model casts just its backbone to fp16 itself, and its heads run in fp32).
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        *,
        device: str,
        autocast_forward: bool = True,
        precision: torch.dtype = torch.float16,
        **kwargs,
    ):
        device_type = torch.device(device).type
        super().__init__(
            model, data_loader, optimizer, grad_scaler=torch.amp.GradScaler(device_type), precision=precision, **kwargs
        )
        self.device_type = device_type
        self.autocast_forward = autocast_forward

    def run_step(self):
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision, enabled=self.autocast_forward):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses, loss_dict = loss_dict, {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()


def mixed_precision(cfg: CfgNode) -> dict[str, Any] | None:
    """``MixedPrecisionTrainer`` arguments for ``cfg``, or ``None`` for full-precision training."""
    if not (cfg.SOLVER.AMP.ENABLED or cfg.FP16):
        return None
    return {"device": cfg.MODEL.DEVICE, "autocast_forward": bool(cfg.SOLVER.AMP.ENABLED)}
