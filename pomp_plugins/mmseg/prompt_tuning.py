"""POMP's prompt-tuning stage for segmentation: fine-tune a POMP prompt on crops of seen-class ground-truth masks.

Before it trains the segmenter, POMP's segmentation recipe (prompt-pretraining's ``third_party/zsseg.baseline``:
config ``zero_shot_proposal_classification_learn_prompt_pomp_bs32_10k.yaml``, model ``ProposalClipClassifier``,
data ``MaskFormerBinarySemanticDatasetMapper``) adapts the pre-trained prompt to region crops, then uses the tuned
prompt frozen. Steps, as there:

1. samples: every (training image, seen class present in its label map) pair; per class at most
   ``sample_per_class`` of them (32 for COCO-Stuff, 128 for VOC), drawn once with a fixed seed;
2. crop: the tight box of the class's mask (grown about its centre by ``expand_ratio``, 1.0), then a random resized
   crop (area 8-100 %, aspect 3/4-4/3) resized to CLIP's input size, and a random horizontal flip;
3. CLIP input: the crop normalised with CLIP's mean/std; pixels outside the class mask set to a constant;
4. logits ``100 * cos(CLIP image feature, prompted text feature of each seen class)``, cross-entropy with the crop's
   class; CLIP is frozen, only the prompt's ``ctx`` learns (initialised from the pre-trained POMP prompt);
5. SGD, lr 0.02, momentum 0.9, weight decay 5e-4, batch 32, 100 warm-up iterations at 0.005 x lr, then cosine to 0;
   16k iterations on COCO-Stuff-156, 3.2k on VOC-15.

Differences (see the README): per-class samples are drawn without replacement (the reference draws with
replacement, so a class can hold the same crop twice), crops are square at CLIP's input size, and a mask box that
touches the image border keeps its last row/column.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pomp_plugins.prompt import LoadedClip, PromptedTextEncoder

FILLS = ("reference", "mean-colour")


@dataclass(frozen=True)
class TuningRecipe:
    """POMP's prompt-tuning hyper-parameters (COCO-Stuff values; VOC: ``iters=3200``, ``sample_per_class=128``)."""

    iters: int = 16000
    batch_size: int = 32
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.005
    temperature: float = 100.0
    sample_per_class: int = 32
    expand_ratio: float = 1.0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    fill: str = "reference"
    seed: int = 0


def lr_factor(step: int, recipe: TuningRecipe) -> float:
    """detectron2's ``WarmupCosineLR`` with constant warm-up: the lr multiplier at iteration ``step``."""
    warmup = recipe.warmup_factor if step < recipe.warmup_iters else 1.0
    return warmup * 0.5 * (1.0 + math.cos(math.pi * step / recipe.iters))


def sample_pairs(
    classes_per_image: Sequence[Sequence[int]], trained: Sequence[int], per_class: int, seed: int = 0
) -> list[tuple[int, int]]:
    """``(image index, class id)`` pairs: each trained class present in an image, at most ``per_class`` per class.

    ``classes_per_image[i]``: the class ids in image ``i``'s label map. Classes with more pairs than ``per_class``
    keep ``per_class`` of them, drawn without replacement by ``numpy.random.default_rng(seed)``; ``per_class <= 0``
    keeps all. Sorted by class, then image.
    """
    trained = set(int(c) for c in trained)
    groups: dict[int, list[int]] = defaultdict(list)
    for image, present in enumerate(classes_per_image):
        for cls in sorted(set(int(c) for c in present) & trained):
            groups[cls].append(image)
    rng = np.random.default_rng(seed)
    pairs = []
    for cls in sorted(groups):
        images = groups[cls]
        if 0 < per_class < len(images):
            images = sorted(rng.choice(images, size=per_class, replace=False).tolist())
        pairs += [(image, cls) for image in images]
    return pairs


def mask_box(mask: np.ndarray, expand_ratio: float = 1.0) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (``x1``/``y1`` exclusive) of a non-empty ``[H, W]`` bool mask, grown about its centre by
    ``expand_ratio`` and clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        raise ValueError("empty mask")
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    cx, cy, half_w, half_h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * expand_ratio / 2, (y1 - y0) * expand_ratio / 2
    height, width = mask.shape
    box = (
        max(0, int(cx - half_w)),
        max(0, int(cy - half_h)),
        min(width, int(cx + half_w)),
        min(height, int(cy + half_h)),
    )
    return box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)


def random_resized_box(
    height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop`` box ``(x0, y0, w, h)``: 10 tries at a random area and aspect, else the
    centre crop clamped to the aspect range."""
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    aspect = width / height
    w, h = (
        (width, int(round(width / min(ratio))))
        if aspect < min(ratio)
        else (int(round(height * max(ratio))), height)
        if aspect > max(ratio)
        else (width, height)
    )
    return (width - w) // 2, (height - h) // 2, w, h


def class_crop(
    image: np.ndarray, labels: np.ndarray, class_id: int, size: int, recipe: TuningRecipe, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop: ``[size, size, 3]`` uint8 image and ``[size, size]`` bool mask of ``class_id``.

    ``image``: ``[H, W, 3]`` uint8; ``labels``: ``[H, W]`` class ids. The random crop is redrawn (up to 10 times,
    then the whole box) if it misses the class.
    """
    x0, y0, x1, y1 = mask_box(labels == class_id, recipe.expand_ratio)
    image, labels = image[y0:y1, x0:x1], labels[y0:y1, x0:x1]
    height, width = labels.shape
    for attempt in range(11):
        x, y, w, h = (
            random_resized_box(height, width, rng, recipe.crop_scale, recipe.crop_ratio)
            if attempt < 10
            else (0, 0, width, height)
        )
        mask = labels[y : y + h, x : x + w] == class_id
        if mask.any():
            break
    crop = cv2.resize(np.ascontiguousarray(image[y : y + h, x : x + w]), (size, size), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    if rng.uniform() < recipe.flip_prob:
        crop, mask = crop[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(crop), np.ascontiguousarray(mask)


class MaskCropDataset(Dataset):
    """Crops of seen-class ground-truth masks of a segmentation dataset (see :func:`class_crop`).

    Args:
        load: ``load(i)`` -> ``(image [H, W, 3] uint8 RGB, labels [H, W] int class ids)`` of image ``i``.
        pairs: ``(image index, class id)`` pairs (see :func:`sample_pairs`); a class id indexes ``classes``.
        size: the crop side (CLIP's input size).

    Item ``k`` is ``(image [3, size, size] uint8, mask [size, size] bool, class id)``; its randomness comes from
    ``(recipe.seed, epoch, k)`` (``set_epoch``), so runs repeat exactly.
    """

    def __init__(
        self,
        load: Callable[[int], tuple[np.ndarray, np.ndarray]],
        pairs: Sequence[tuple[int, int]],
        size: int,
        recipe: TuningRecipe = TuningRecipe(),
    ):
        if not pairs:
            raise ValueError("no (image, seen class) pairs to tune the prompt on: the label maps hold no seen class")
        self.load, self.pairs, self.size, self.recipe, self.epoch = load, list(pairs), size, recipe, 0

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int):
        image_index, class_id = self.pairs[index]
        image, labels = self.load(image_index)
        rng = np.random.default_rng([self.recipe.seed, self.epoch, index])
        crop, mask = class_crop(image, labels, class_id, self.size, self.recipe, rng)
        return torch.from_numpy(crop).permute(2, 0, 1), torch.from_numpy(mask), class_id


class RegionPromptTuner(nn.Module):
    """Cross-entropy of masked crops against the prompted text features of the trained classes.

    Args:
        clip: the frozen CLIP (image and text towers).
        encoder: the prompted text encoder over ``clip`` whose ``ctx`` learns.
        class_names: the prompt texts of the classes a crop's label indexes (all the dataset's classes).
        trained: ``[C]`` bool, the classes that take part in the softmax (the seen ones).
        temperature: the cosine logit scale (100 in POMP's recipe).
        fill: outside the class mask, ``'reference'`` puts CLIP's mean values (0.48, 0.46, 0.41) into the
            normalised image, as POMP's tuning does; ``'mean-colour'`` puts 0 (the mean colour), as ZSSeg's CLIP
            stage does at test time.
    """

    def __init__(
        self,
        clip: LoadedClip,
        encoder: PromptedTextEncoder,
        class_names: Sequence[str],
        trained: torch.Tensor,
        temperature: float = 100.0,
        fill: str = "reference",
    ):
        super().__init__()
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
        if len(class_names) != len(trained):
            raise ValueError(f"{len(class_names)} class names but a trained mask over {len(trained)} classes")
        self.clip, self.encoder, self.temperature = clip, encoder, temperature
        self.trained_ids = torch.nonzero(trained).flatten()
        self.names = [class_names[i] for i in self.trained_ids.tolist()]
        mean, _ = clip.pixel_mean_std()
        self.register_buffer("fill", mean[None] if fill == "reference" else torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("target_of", torch.full((len(trained),), -1, dtype=torch.long), persistent=False)
        self.target_of[self.trained_ids] = torch.arange(len(self.trained_ids))
        self.prompts = encoder.pack(encoder.tokenize(self.names, device="cpu"))

    def clip_input(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` uint8 RGB crops and ``[B, S, S]`` bool masks -> CLIP's normalised, masked input."""
        x = self.clip.normalize_pixels(images)
        inside = masks[:, None].to(x.dtype)
        return x * inside + (1 - inside) * self.fill

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` L2-normalised CLIP features of the masked crops (no gradient: CLIP is frozen)."""
        dtype = next(self.clip.model.visual.parameters()).dtype
        return F.normalize(self.clip.model.encode_image(self.clip_input(images, masks).to(dtype)).float(), dim=-1)

    def text_features(self) -> torch.Tensor:
        """``[K, D]`` L2-normalised prompted features of the trained classes, differentiable w.r.t. ``ctx``."""
        return F.normalize(self.encoder(self.prompts), dim=-1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> dict:
        """Returns ``loss`` (mean CE) and ``accuracy`` (fraction of crops whose top class is right)."""
        targets = self.target_of[labels]
        if bool((targets < 0).any()):
            raise ValueError(f"crops of untrained classes {sorted(set(labels[targets < 0].tolist()))}")
        logits = self.temperature * self.image_features(images, masks) @ self.text_features().t()
        return {
            "loss": F.cross_entropy(logits, targets),
            "accuracy": (logits.argmax(1) == targets).float().mean().detach(),
        }


def scan_classes(
    load_labels: Callable[[int], np.ndarray], count: int, num_classes: int, index_file: str | os.PathLike | None = None
) -> list[list[int]]:
    """The class ids (``< num_classes``, i.e. not ignored) in each of ``count`` label maps.

    Reading every label map of a large dataset takes minutes: with ``index_file``, the result is read from it when it
    exists (and holds ``count`` entries) and written to it otherwise.
    """
    if index_file is not None and Path(index_file).is_file():
        index = json.loads(Path(index_file).read_text())
        if len(index) == count:
            return index
    index = []
    for i in range(count):
        present = np.unique(load_labels(i))
        index.append([int(c) for c in present if c < num_classes])
    if index_file is not None:
        Path(index_file).parent.mkdir(parents=True, exist_ok=True)
        Path(index_file).write_text(json.dumps(index))
    return index


def infinite_batches(dataset: MaskCropDataset, batch_size: int, seed: int, num_workers: int = 0):
    """Shuffled batches forever, epoch after epoch (each epoch a new permutation and new crops)."""
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order.tolist()),
            batch_size=batch_size,
            num_workers=num_workers,
            drop_last=len(dataset) >= batch_size,
        )
        yield from loader
        epoch += 1


def tune_prompt(
    tuner: RegionPromptTuner,
    dataset: MaskCropDataset,
    recipe: TuningRecipe,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    log: Callable[[dict], None] | None = None,
    log_interval: int = 20,
) -> list[float]:
    """Run POMP's prompt tuning for ``recipe.iters`` iterations; ``tuner.encoder.ctx`` holds the result.

    Returns the loss of every iteration. ``log`` gets ``{'iter', 'loss', 'accuracy', 'lr'}`` every
    ``log_interval`` iterations and at the last.
    """
    ctx = tuner.encoder.ctx
    optimizer = torch.optim.SGD([ctx], lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe))
    batches = infinite_batches(dataset, recipe.batch_size, recipe.seed, num_workers)
    losses = []
    for step in range(recipe.iters):
        images, masks, labels = (t.to(device) for t in next(batches))
        out = tuner(images, masks, labels)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        losses.append(out["loss"].item())
        if log is not None and ((step + 1) % log_interval == 0 or step + 1 == recipe.iters):
            log({"iter": step + 1, "loss": losses[-1], "accuracy": float(out["accuracy"]), "lr": lr})
    return losses


@dataclass
class SegmentationSamples:
    """The images of a segmentation dataset config, read without its training augmentations.

    ``load(i)`` -> ``(image [H, W, 3] uint8 RGB, labels [H, W] int64)`` and ``load_labels(i)`` -> labels only, both
    as mmseg's ``LoadAnnotations`` gives them (``reduce_zero_label`` and the dataset's label map applied, ignored
    pixels 255); ``classes``: the dataset's class names (``None`` if it names none).
    """

    classes: Sequence[str] | None
    count: int
    load: Callable[[int], tuple[np.ndarray, np.ndarray]]
    load_labels: Callable[[int], np.ndarray]


def _leaf_datasets(cfg: dict) -> list[dict]:
    """The plain datasets inside ``ConcatDataset`` / ``RepeatDataset`` configs (each image once)."""
    kind = cfg.get("type")
    if kind == "ConcatDataset":
        return [leaf for sub in cfg["datasets"] for leaf in _leaf_datasets(sub)]
    if kind == "RepeatDataset":
        return _leaf_datasets(cfg["dataset"])
    return [cfg]


def load_segmentation_samples(dataset_cfg: dict) -> SegmentationSamples:
    """:class:`SegmentationSamples` of an mmseg dataset config (plain, or ``ConcatDataset`` / ``RepeatDataset``)."""
    import bisect

    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.transforms import LoadAnnotations
    from mmseg.registry import DATASETS

    datasets = [
        DATASETS.build({**leaf, "pipeline": [], "serialize_data": False}) for leaf in _leaf_datasets(dict(dataset_cfg))
    ]
    starts = np.cumsum([0] + [len(d) for d in datasets]).tolist()
    load_image, load_annotations = LoadImageFromFile(), LoadAnnotations()

    def info(index: int) -> dict:
        which = bisect.bisect_right(starts, index) - 1
        return dict(datasets[which].get_data_info(index - starts[which]))

    def load_labels(index: int) -> np.ndarray:
        return load_annotations(info(index))["gt_seg_map"].astype(np.int64)

    def load(index: int) -> tuple[np.ndarray, np.ndarray]:
        results = load_annotations(load_image(info(index)))
        return np.ascontiguousarray(results["img"][..., ::-1]), results["gt_seg_map"].astype(np.int64)

    return SegmentationSamples(datasets[0].metainfo.get("classes"), starts[-1], load, load_labels)


def tune_prompt_for_config(
    cfg,
    out: str | os.PathLike,
    recipe: TuningRecipe = TuningRecipe(),
    init: str | os.PathLike | None = None,
    init_phrase: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str = "auto",
    index_file: str | os.PathLike | None = None,
    num_workers: int = 0,
    log: Callable[[dict], None] | None = None,
    log_interval: int = 20,
) -> dict:
    """POMP's prompt tuning on the training set of an mmseg segmentation config; writes the tuned prompt to ``out``.

    The config gives the data (``train_dataloader.dataset``, read without its augmentations), the classes, the split
    and the CLIP (``model.decode_head.text_classifier``). The initial prompt is ``init`` (a prompt file), else
    ``init_phrase`` (e.g. ``'a photo of a'``), else the config's ``prompt``.

    Returns a summary: the first and last losses, the number of crops and classes, the output path.
    """
    from pomp_plugins.prompt import Prompt, load_for_prompt, prompted_encoder, save_prompt
    from pomp_plugins.prompt.embedder import DEFAULT_PRETRAINED

    from .vocabulary import load_split, resolve_classes

    text = dict(cfg.model.decode_head.get("text_classifier") or {})
    if not text:
        raise ValueError(
            "the config's decode head has no text_classifier: give a config with a ZSSegHead or TextClassifierHead"
        )
    if text.get("split") is None:
        raise ValueError("the config's text_classifier has no split: prompt tuning trains on the seen classes")
    vocabulary = resolve_classes(text.get("classes"))
    seen, _ = load_split(text["split"]).masks(vocabulary)
    if init is None and init_phrase is None:
        init = text.get("prompt")
        if init is None:
            raise ValueError("no initial prompt: give a POMP prompt file (init) or a phrase (init_phrase)")
    clip_model, clip_pretrained = text.get("clip_model"), text.get("clip_pretrained", DEFAULT_PRETRAINED)
    clip, prompt = load_for_prompt(init, clip_model, clip_pretrained, device=device, dtype=dtype)
    encoder = prompted_encoder(clip, prompt=prompt, hard_prompt=init_phrase if prompt is None else None)

    samples = load_segmentation_samples(cfg.train_dataloader.dataset)
    if samples.classes is not None and len(samples.classes) != len(vocabulary):
        raise ValueError(
            f"the dataset has {len(samples.classes)} classes but the text classifier scores "
            f"{len(vocabulary)} ({vocabulary.name!r}): they must be the same list"
        )
    classes_per_image = scan_classes(samples.load_labels, samples.count, len(vocabulary), index_file)
    seen_ids = torch.nonzero(seen).flatten().tolist()
    pairs = sample_pairs(classes_per_image, seen_ids, recipe.sample_per_class, recipe.seed)
    crops = MaskCropDataset(samples.load, pairs, clip.image_size, recipe)
    tuner = RegionPromptTuner(clip, encoder, vocabulary.names, seen, recipe.temperature, recipe.fill).to(device)
    losses = tune_prompt(tuner, crops, recipe, device, num_workers, log, log_interval)

    meta = {
        "stage": "POMP segmentation prompt tuning",
        "initial_prompt": str(init) if init else init_phrase,
        "classes": vocabulary.name,
        "split": str(text["split"]),
        "crops": len(pairs),
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(recipe).items()},
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    save_prompt(
        Prompt(encoder.ctx.detach().cpu(), clip_model=clip.name, clip_pretrained=clip.pretrained, meta=meta), out
    )
    return {
        "output": str(out),
        "crops": len(pairs),
        "classes": int(seen.sum()),
        "iters": recipe.iters,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
