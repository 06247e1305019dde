"""Detic's solver: optimizer parameter groups and full-model clipping (against Detic's builder where installed),
the WarmupCosine schedule (against its formula), and mixed-precision steps on the CPU."""

import math

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.solver import build_lr_scheduler
from detectron2.solver import build_optimizer as build_detectron2_optimizer
from detectron2.utils.events import EventStorage
from detic_oracle import detic_config_sections, detic_module
from torch import nn

from pomp_plugins.detectron2 import add_pomp_config
from pomp_plugins.detectron2.config import PompConfigError
from pomp_plugins.detectron2.solver import MixedPrecisionTrainer, build_optimizer, mixed_precision


class Tiny(nn.Module):
    """Named like a detector: a backbone, a shared module, a head, a frozen and a tied parameter."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.roi_heads = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)
        self.bias_head = nn.Linear(3, 3)
        self.tied = self.bias_head  # the same parameters under two names

    def forward(self, x):
        return self.bias_head(self.roi_heads(self.backbone(x)))


def tiny_model():
    torch.manual_seed(0)
    model = Tiny()
    model(torch.randn(2, 3, 6, 6))  # materialise the lazy layer
    return model


def solver_cfg(**overrides):
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.SOLVER.merge_from_list(
        [
            "USE_CUSTOM_SOLVER",
            True,
            "OPTIMIZER",
            "ADAMW",
            "BASE_LR",
            2e-4,
            "BACKBONE_MULTIPLIER",
            0.1,
            "WEIGHT_DECAY",
            1e-4,
            "CLIP_GRADIENTS.ENABLED",
            True,
            "CLIP_GRADIENTS.CLIP_TYPE",
            "full_model",
            "CLIP_GRADIENTS.CLIP_VALUE",
            0.5,
            "CUSTOM_MULTIPLIER_NAME",
            ["bias_head"],
            "CUSTOM_MULTIPLIER",
            3.0,
        ]
    )
    cfg.SOLVER.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def groups(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [(names[id(g["params"][0])], g["lr"], g["weight_decay"]) for g in optimizer.param_groups]


@pytest.mark.parametrize("optimizer", ["ADAMW", "SGD"])
def test_parameter_groups_follow_detics_rules(optimizer):
    model = tiny_model()
    built = build_optimizer(solver_cfg(OPTIMIZER=optimizer), model)
    assert isinstance(built, {"ADAMW": torch.optim.AdamW, "SGD": torch.optim.SGD}[optimizer])

    def lr(name):
        return 2e-4 * (0.1 if "backbone" in name else 1) * (3.0 if "bias_head" in name else 1)

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]  # named_parameters skips the tied copy
    assert groups(built, model) == [(n, pytest.approx(lr(n)), 1e-4) for n in trainable]


@pytest.mark.parametrize("optimizer, clip_type", [("ADAMW", "full_model"), ("SGD", "full_model"), ("ADAMW", "value")])
def test_optimizer_equals_detics_builder(optimizer, clip_type):
    """``value``: what Detic's configs use (CLIP_GRADIENTS.ENABLED with detectron2's default CLIP_TYPE)."""
    solver = detic_module("detic.custom_solver")
    cfg = solver_cfg(OPTIMIZER=optimizer, MOMENTUM=0.9, **{"CLIP_GRADIENTS.CLIP_TYPE": clip_type})
    ours_model, theirs_model = tiny_model(), tiny_model()
    ours, theirs = build_optimizer(cfg, ours_model), solver.build_custom_optimizer(cfg, theirs_model)
    assert groups(ours, ours_model) == groups(theirs, theirs_model)
    assert type(ours).__mro__[1] is type(theirs).__mro__[1]  # the same torch optimizer under the clipping
    x = torch.randn(4, 3, 6, 6)
    for _ in range(3):  # gradients far above the clip value: the clipping decides the steps
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            opt.zero_grad()
            (100 * model(x).square().sum()).backward()
            opt.step()
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "config",
    [
        "Base-C2_L_R5021k_640b64_4x.yaml",
        "Detic_LbaseI_CLIP_SwinB_896b32_4x_ft4x_max-size.yaml",
        "Base_OVCOCO_C4_1x.yaml",
    ],
)
def test_detics_configs_give_detics_optimizer(config):
    """Detic's train_net: its builder with USE_CUSTOM_SOLVER, detectron2's otherwise."""
    solver = detic_module("detic.custom_solver")
    cfg = get_cfg()
    add_pomp_config(cfg)
    cfg.merge_from_other_cfg(detic_config_sections(config, ("SOLVER",)))
    ours_model, theirs_model = tiny_model(), tiny_model()
    ours = build_optimizer(cfg, ours_model)
    theirs = (solver.build_custom_optimizer if cfg.SOLVER.USE_CUSTOM_SOLVER else build_detectron2_optimizer)(
        cfg, theirs_model
    )
    assert type(ours).__mro__[1:] == type(theirs).__mro__[1:]
    assert [{k: v for k, v in g.items() if k != "params"} for g in ours.param_groups] == [
        {k: v for k, v in g.items() if k != "params"} for g in theirs.param_groups
    ]


def test_full_model_clipping_bounds_the_global_gradient_norm():
    model = tiny_model()
    optimizer = build_optimizer(
        solver_cfg(OPTIMIZER="SGD", BASE_LR=1.0, BACKBONE_MULTIPLIER=1.0, CUSTOM_MULTIPLIER=1.0, WEIGHT_DECAY=0.0),
        model,
    )
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    (1000 * model(torch.randn(2, 3, 6, 6)).sum()).backward()
    optimizer.step()  # SGD, lr 1, no momentum or decay: the step is minus the clipped gradient
    steps = [b - p.detach() for b, p in zip(before, [p for p in model.parameters() if p.requires_grad])]
    assert torch.sqrt(sum(s.square().sum() for s in steps)).item() == pytest.approx(0.5, rel=1e-4)


def test_custom_settings_need_the_custom_solver():
    with pytest.raises(PompConfigError, match="need SOLVER.USE_CUSTOM_SOLVER True"):
        build_optimizer(solver_cfg(USE_CUSTOM_SOLVER=False), tiny_model())
    with pytest.raises(PompConfigError, match="SOLVER.OPTIMIZER 'LAMB' is not supported"):
        build_optimizer(solver_cfg(OPTIMIZER="LAMB"), tiny_model())
    plain = build_optimizer(
        solver_cfg(
            USE_CUSTOM_SOLVER=False, OPTIMIZER="SGD", BACKBONE_MULTIPLIER=1.0, **{"CLIP_GRADIENTS.CLIP_TYPE": "value"}
        ),
        tiny_model(),
    )
    assert isinstance(plain, torch.optim.SGD)  # detectron2's own builder


def test_warmup_cosine_schedule_is_detectron2s_formula():
    """Detic's recipe: WarmupCosineLR, linear warm-up from WARMUP_FACTOR over WARMUP_ITERS, cosine to 0 at MAX_ITER."""
    cfg = solver_cfg(LR_SCHEDULER_NAME="WarmupCosineLR", MAX_ITER=1000, WARMUP_ITERS=100, WARMUP_FACTOR=1e-4)
    model = tiny_model()
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)

    def cosine(t):
        return 0.5 * (1 + math.cos(math.pi * t / 1000))

    def expected(t):
        if t < 100:  # from factor x cosine(0) to cosine(warm-up end), linearly
            return 1e-4 + (cosine(100) - 1e-4) * t / 100
        return cosine(t)

    seen = {}
    for t in range(1000):
        seen[t] = [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    for t in (0, 1, 50, 99, 100, 101, 500, 900, 999):
        base = [g["initial_lr"] for g in optimizer.param_groups]
        assert seen[t] == pytest.approx([b * expected(t) for b in base], rel=1e-6, abs=1e-12), t


class LossModel(nn.Module):
    """Returns detectron2-style losses; records the dtype its layer computed in."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.dtypes = []

    def forward(self, batch):
        out = self.layer(torch.stack(batch))
        self.dtypes.append(out.dtype)
        return {"loss": out.float().square().mean()}


@pytest.mark.parametrize("amp, fp16, dtype", [(True, False, torch.float16), (False, True, torch.float32)])
def test_mixed_precision_steps_run_on_the_cpu(amp, fp16, dtype):
    cfg = solver_cfg()
    cfg.SOLVER.AMP.ENABLED, cfg.FP16, cfg.MODEL.DEVICE = amp, fp16, "cpu"
    torch.manual_seed(0)
    model = LossModel().train()
    data = iter(lambda: [torch.randn(4) for _ in range(2)], None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = MixedPrecisionTrainer(model, data, optimizer, **mixed_precision(cfg))
    before = model.layer.weight.detach().clone()
    with EventStorage(0) as storage:
        trainer.storage = storage
        for _ in range(3):
            trainer.iter = storage.iter
            trainer.run_step()
            storage.step()
    assert model.dtypes == [dtype] * 3  # SOLVER.AMP autocasts the forward; FP16 leaves that to the model
    assert trainer.grad_scaler.is_enabled() and not torch.equal(before, model.layer.weight)
    assert torch.isfinite(model.layer.weight).all()
    assert mixed_precision(solver_cfg()) is None


def test_full_model_clipping_sees_unscaled_gradients_under_the_loss_scaler():
    cfg = solver_cfg(OPTIMIZER="SGD", BASE_LR=1.0, BACKBONE_MULTIPLIER=1.0, CUSTOM_MULTIPLIER=1.0, WEIGHT_DECAY=0.0)
    cfg.FP16, cfg.MODEL.DEVICE = True, "cpu"
    torch.manual_seed(0)
    model = LossModel().train()
    data = iter(lambda: [100 * torch.randn(4) for _ in range(2)], None)
    trainer = MixedPrecisionTrainer(model, data, build_optimizer(cfg, model), **mixed_precision(cfg))
    before = [p.detach().clone() for p in model.parameters()]
    with EventStorage(0) as storage:
        trainer.storage, trainer.iter = storage, 0
        trainer.run_step()  # the loss is scaled by 65536: clipping before unscaling would step by 0.5 / 65536
    step = torch.sqrt(sum((b - p.detach()).square().sum() for b, p in zip(before, model.parameters())))
    assert step.item() == pytest.approx(0.5, rel=1e-4)


@pytest.mark.parametrize("custom", [True, False])
@pytest.mark.parametrize("clip_type", ["value", "norm"])
def test_per_parameter_clipping_skips_parameters_without_a_gradient(custom, clip_type):
    """A step in which a parameter got no gradient (torch 2.14's clip_grad_value_ raises on one): the others are
    clipped as detectron2 clips them, the gradient-less one does not move."""
    settings = {"CLIP_GRADIENTS.CLIP_TYPE": clip_type, "CLIP_GRADIENTS.CLIP_VALUE": 0.5}
    settings.update(OPTIMIZER="SGD", BASE_LR=1.0, BACKBONE_MULTIPLIER=1.0, CUSTOM_MULTIPLIER=1.0, WEIGHT_DECAY=0.0)
    used, unused = torch.nn.Parameter(torch.tensor([3.0, -0.2, 4.0])), torch.nn.Parameter(torch.ones(2))
    model = torch.nn.Module()
    model.used, model.unused = used, unused
    optimizer = build_optimizer(solver_cfg(USE_CUSTOM_SOLVER=custom, **settings), model)
    (used * torch.tensor([3.0, -0.2, 4.0])).sum().backward()  # gradient [3, -0.2, 4]; none for `unused`
    optimizer.step()  # SGD, lr 1: the step is minus the clipped gradient
    if clip_type == "value":
        expected_step = torch.tensor([0.5, -0.2, 0.5])  # each value into [-0.5, 0.5]
    else:
        expected_step = torch.tensor([3.0, -0.2, 4.0]) * 0.5 / math.sqrt(9 + 0.04 + 16)  # L2 norm to 0.5
    torch.testing.assert_close(torch.tensor([3.0, -0.2, 4.0]) - used.detach(), expected_step, rtol=1e-4, atol=1e-6)
    assert unused.grad is None and torch.equal(unused.detach(), torch.ones(2))
