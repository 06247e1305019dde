"""A training step: each group's loss is POMP's formula, the step's gradient is the mean over its groups, and
ctx.grad is one persistent buffer (what CUDA-graph replays and the DDP average must write into)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from pomp_plugins.pretrain import PompStep, group_negatives
from pomp_plugins.pretrain.gradient import GradientBuffer
from pomp_plugins.prompt import PromptedTextEncoder, get_vocabulary

NAMES = list(get_vocabulary("imagenet21k-p").names[:120])
K, VIEWS, SCALE, BASE = 30, 2, 100.0, 10.0


def reference_group_loss(image: torch.Tensor, text_of: dict, labels: list[int], negatives: list[int]) -> torch.Tensor:
    """POMP's loss of one group, written out row by row: positive logit s*cos, then s*cos + m_i for each sampled
    negative other than the row's own class, m_i = log10((N-1) / (K-1-r_i)); cross-entropy on the positive."""
    losses = []
    for row, label in enumerate(labels):
        hits = sum(n == label for n in negatives)
        margin = math.log((len(NAMES) - 1) / (K - 1 - hits)) / math.log(BASE)
        positive = SCALE * F.cosine_similarity(image[row], text_of[label], dim=0)
        others = [SCALE * F.cosine_similarity(image[row], text_of[n], dim=0) + margin for n in negatives if n != label]
        logits = torch.stack([positive, *others])
        losses.append(-torch.log_softmax(logits, dim=0)[0])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_a_step_is_the_mean_of_its_groups_reference_losses(tiny_clip, fixed_shapes):
    generator = torch.Generator().manual_seed(5)
    group_labels = [[3, 3, 50, 50, 119, 119], [7, 7, 50, 50]]  # 3 and 2 images x 2 views: a partial group
    features = [F.normalize(torch.randn(len(labels), 64, generator=generator), dim=-1) for labels in group_labels]
    negatives = [group_negatives(len(NAMES), K, seed=1, step=0, group=g) for g in range(2)]

    # reference: per-group formula on the prompted encoder's text features, the gradient by plain autograd
    reference = PromptedTextEncoder.from_clip(tiny_clip.model, 4, generator=torch.Generator().manual_seed(0))
    ctx_before = reference.ctx.detach().clone()
    losses = []
    for image, labels, negative in zip(features, group_labels, negatives):
        classes = sorted(set(labels) | set(negative.tolist()))
        text = reference.encode_names([NAMES[c] for c in classes], normalize=False)
        losses.append(reference_group_loss(image, dict(zip(classes, text)), labels, negative.tolist()))
    rows = [len(labels) for labels in group_labels]
    (expected_grad,) = torch.autograd.grad(sum(r * l for r, l in zip(rows, losses)) / sum(rows), reference.ctx)

    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, 4, generator=torch.Generator().manual_seed(0))
    step = PompStep(
        encoder,
        encoder.tokenize(NAMES, device="cpu"),
        SCALE,
        K,
        BASE,
        torch.optim.SGD([encoder.ctx], lr=1.0),
        cuda_graphs=fixed_shapes,
        max_positives=3,
    )
    for image, labels, negative, expected in zip(features, group_labels, negatives, losses):
        loss = step.accumulate(image, step.prepare(torch.tensor(labels), negative))
        assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert step.apply() == sum(rows)
    # plain SGD at lr 1: the update is exactly minus the rows-weighted mean of the group gradients
    update = ctx_before - encoder.ctx.detach()
    assert torch.allclose(update, expected_grad, atol=1e-5 * float(expected_grad.abs().max()), rtol=1e-4)
    assert encoder.ctx.grad is step.gradient.grad and not encoder.ctx.grad.any()  # cleared for the next step


def test_the_gradient_buffer_is_ctx_grad_for_good_and_averages_in_place():
    ctx = torch.nn.Parameter(torch.zeros(2, 3))
    buffer = GradientBuffer(ctx)
    home = ctx.grad
    buffer.add(torch.ones(2, 3), rows=2)
    buffer.add(torch.full((2, 3), 4.0), rows=6)

    def two_ranks(tensor):  # another process holding 2 x (-1) over 2 rows, summed in place
        tensor.add_(torch.cat([torch.full((6,), -2.0), torch.tensor([2.0])]))

    assert buffer.average(two_ranks) == 10
    assert ctx.grad is home and torch.allclose(ctx.grad, torch.full((2, 3), (2 + 24 - 2) / 10))
    buffer.zero()
    assert ctx.grad is home and not ctx.grad.any() and buffer.average() == 0
    torch.optim.SGD([ctx], lr=1.0).zero_grad()  # sets .grad to None: must not go unnoticed
    with pytest.raises(RuntimeError, match="was replaced"):
        buffer.average()


def make_step(tiny_clip, log_base=BASE, **kwargs):
    encoder = PromptedTextEncoder.from_clip(tiny_clip.model, 4, generator=torch.Generator().manual_seed(0))
    return PompStep(
        encoder,
        encoder.tokenize(NAMES, device="cpu"),
        SCALE,
        K,
        log_base,
        torch.optim.SGD([encoder.ctx], lr=1.0),
        **kwargs,
    )


def test_the_step_keeps_the_local_correction_margin_on(tiny_clip):
    # the same group with and without the margin: the step must compute the margin's loss (written out above)
    features = F.normalize(torch.randn(4, 64, generator=torch.Generator().manual_seed(3)), dim=-1)
    labels, negatives = [3, 3, 50, 50], group_negatives(len(NAMES), K, seed=2, step=0, group=0)
    step = make_step(tiny_clip)
    assert not step.fixed_shapes and step.captured is None  # the eager layout unless asked for CUDA graphs
    text = step.encoder.encode_names(NAMES, normalize=False)
    with torch.no_grad():
        with_margin = reference_group_loss(features, dict(enumerate(text)), labels, negatives.tolist())
    loss = step.loss(features, step.prepare(torch.tensor(labels), negatives)).detach()
    assert float(loss) == pytest.approx(float(with_margin), rel=1e-5)
    plain = make_step(tiny_clip, log_base=None).loss(features, step.prepare(torch.tensor(labels), negatives)).detach()
    assert abs(float(loss) - float(plain)) > 0.1  # log10(119/29) = 0.61 on every negative logit


def test_the_flat_function_cuda_graphs_capture_is_the_step_and_empty_groups_add_nothing(tiny_clip):
    features = F.normalize(torch.randn(4, 64, generator=torch.Generator().manual_seed(4)), dim=-1)
    negatives = group_negatives(len(NAMES), K, seed=2, step=0, group=1)
    step = make_step(tiny_clip, cuda_graphs=True, max_positives=2)
    assert step.captured is None and step.captured_shapes == 0  # on a CPU: the fixed layout, run eagerly
    inputs = step.prepare(torch.tensor([3, 3, 7, 7]), negatives)
    assert len(inputs.plan.classes) == K - 1 + 2 and inputs.rows == 4
    loss, gradient = step.loss_and_gradient(features, inputs)
    flat_loss, flat_gradient = step._flat_loss_and_gradient(features, *step._flatten(inputs))  # as accumulate calls it
    assert float(flat_loss) == float(loss) and torch.equal(flat_gradient, gradient)
    assert step.encoder.ctx.grad is step.gradient.grad and not step.gradient.grad.any()  # nothing written yet
    empty = step.prepare(torch.tensor([], dtype=torch.long), negatives)
    assert step.accumulate(features[:0], empty) is None and step.apply() == 0
    before = step.encoder.ctx.detach().clone()
    assert float(step(features, inputs)) == pytest.approx(float(loss), rel=1e-6)  # one group: accumulate + apply
    assert torch.allclose(before - step.encoder.ctx.detach(), gradient, atol=1e-7)


def held_tensors(obj):
    """Every tensor a (nested) dataclass holds, found by value, not by declared type."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value):
            yield from held_tensors(value)
        elif isinstance(value, torch.Tensor):
            yield value


def assert_same_fields(ours, expected, path="inputs"):
    assert type(ours) is type(expected), path
    for field in dataclasses.fields(expected):
        value, wanted, where = getattr(ours, field.name), getattr(expected, field.name), f"{path}.{field.name}"
        if dataclasses.is_dataclass(wanted):
            assert_same_fields(value, wanted, where)
        elif isinstance(wanted, torch.Tensor):
            assert value.dtype == wanted.dtype and value.shape == wanted.shape and torch.equal(value, wanted), where
        else:
            assert value == wanted, where


def test_the_flat_layout_cuda_graphs_replay_holds_every_field_in_its_place(tiny_clip):
    """The flat tensors are laid out by the dataclasses' fields: rebuilding gives back every field of the step's
    inputs, and every tensor they hold is in the layout (positions written by hand misalign when a field is added)."""
    step = make_step(tiny_clip, cuda_graphs=True, max_positives=2)
    inputs = step.prepare(torch.tensor([3, 3, 7, 7]), group_negatives(len(NAMES), K, seed=2, step=0, group=1))
    flat = step._flatten(inputs)
    assert len(flat) == len(list(held_tensors(inputs))) == 12
    assert all(ours is theirs for ours, theirs in zip(flat, held_tensors(inputs)))  # declaration order
    assert_same_fields(step._unflatten(flat), inputs)
    with pytest.raises(ValueError, match="13 flat tensors, but a step's inputs have 12"):
        step._unflatten([*flat, flat[0]])


def test_image_features_of_the_frozen_tower_without_a_graph(tiny_clip):
    from pomp_plugins.pretrain import image_feature_function

    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5), requires_grad=True)
    features = image_feature_function(tiny_clip.model)(images)
    assert not features.requires_grad
    with torch.no_grad():
        assert torch.allclose(features, F.normalize(tiny_clip.model.encode_image(images), dim=-1), atol=1e-6)
