#!/usr/bin/env python
"""One POMP training step, reference-style vs ours, on the same data in one process.

reference-style (what the released code does, DESIGN.md section 3): the whole CLIP and ``ctx`` in fp16 (fp32 on a
CPU, where fp16 matmuls are not meaningful), CoOp's prompt learner (token-embedding buffers of all N classes at
77 tokens, ``ctx`` spliced in), open_clip's own transformer with its 77x77 causal mask, the positive prompt of
every view of every image encoded again next to the K-1 negatives, then the same loss and an SGD step.

ours (``pomp_plugins.pretrain.PompStep``, the trainer's step): frozen weights in bf16 (fp32 on a CPU), fp32
``ctx``, image tower under ``no_grad``, each distinct class encoded once, shared ``[SOT] ctx`` prefix and packed name
tokens; on a GPU, fixed shapes replayed as CUDA graphs (also timed without them); and ours in feature-cache mode
(image features read from a memory-mapped file, text side only).

Prints (and with ``--json`` writes) JSON: ms/step, images/s and peak memory of each, ratios, and the loss of both
on the same first batch (they compute the same loss; on a CPU in fp32 the two agree to about 1e-6).

    python bench/pretrain_step.py --preset cpu --json bench/results/pretrain_step_<machine>.json
    python bench/pretrain_step.py --preset gpu --json pretrain_step_h200.json
    python bench/pretrain_step.py --preset gpu --dry-run --device cpu    # the GPU preset's code, shrunk
"""

import argparse
import copy
import gc
import itertools
import json
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakMemory, machine, synchronize, time_call  # noqa: E402

from pomp_plugins.images.features import compiled_image_encoder  # noqa: E402
from pomp_plugins.pretrain import PompStep, group_negatives, image_feature_function  # noqa: E402
from pomp_plugins.prompt import PromptedTextEncoder, get_vocabulary, load_clip  # noqa: E402
from pomp_plugins.prompt.device import to_device  # noqa: E402

PRESETS = {
    "cpu": {
        "model": "pomp-tiny",
        "device": "cpu",
        "classes": None,
        "num_sampled": 1000,
        "batch": 32,
        "views": 4,
        "n_ctx": [4],
        "repeats": 10,
        "warmup": 2,
    },
    "gpu": {
        "model": "ViT-B-16",
        "device": "cuda",
        "classes": None,
        "num_sampled": 1000,
        "batch": 32,
        "views": 4,
        "n_ctx": [4, 16],
        "repeats": 20,
        "warmup": 5,
    },
}
DRY_RUN = {"classes": 200, "num_sampled": 32, "batch": 2, "views": 2, "repeats": 1, "warmup": 1}
LR, MOMENTUM, WEIGHT_DECAY, LOG_BASE = 0.002, 0.9, 5e-4, 10.0
CACHED_IMAGES = 512  # rows of the benchmark's feature-cache file
DISTINCT_STEPS = 8  # batches of negatives cycled through, so no step repeats the previous one
COMPILE_START_BUDGET_S = 150  # the compiled variant (a compile of tens of seconds) starts only before this


def sgd(parameter: torch.Tensor) -> torch.optim.SGD:
    return torch.optim.SGD([parameter], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def reference_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    negatives: torch.Tensor,
    logit_scale: float,
    num_classes: int,
) -> torch.Tensor:
    """The released code's loss, written out (not ``pomp_loss``, so the benchmark's agreement means something):
    ``text`` holds every row's positive prompt ``[B]`` then the negatives ``[K-1]``; a negative equal to the row's
    label is dropped and the others get the margin ``log10((N-1) / (K-1-r))``."""
    similarity = logit_scale * image.float() @ text.float().t()  # [B, B + K-1]
    rows = len(labels)
    positive = similarity[torch.arange(rows, device=similarity.device), torch.arange(rows, device=similarity.device)]
    own = labels[:, None] == negatives[None, :]  # [B, K-1]
    margin = torch.log10((num_classes - 1) / (len(negatives) - own.sum(dim=1, keepdim=True)).float())
    negative = torch.where(own, float("-inf"), similarity[:, rows:] + margin)
    logits = torch.cat([positive[:, None], negative], dim=1)
    return -(logits.log_softmax(dim=1)[:, 0]).mean()


class ReferenceStyleStep:
    """The released code's step (CoOp's prompt learner and text encoder on open_clip's modules)."""

    labels_on_device = True  # the reference draws and indexes classes on the GPU

    def __init__(
        self,
        clip_model: nn.Module,
        names: list[str],
        n_ctx: int,
        num_sampled: int,
        logit_scale: float,
        ctx: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.model = copy.deepcopy(clip_model).to(device=device, dtype=dtype)
        self.num_classes, self.logit_scale = len(names), logit_scale
        placeholder = " ".join(["X"] * n_ctx)
        tokens = open_clip.tokenize([f"{placeholder} {name}." for name in names]).to(device)  # [N, 77]
        with torch.no_grad():
            embedding = self.model.token_embedding(tokens)
        self.token_prefix = embedding[:, :1]  # CoOp's buffers: [N, 1, width] and [N, 77 - 1 - n_ctx, width]
        self.token_suffix = embedding[:, 1 + n_ctx :]
        self.eot = tokens.argmax(dim=-1)
        self.ctx = nn.Parameter(ctx.detach().clone().to(device=device, dtype=dtype))  # never the caller's tensor
        self.optimizer = sgd(self.ctx)

    def text_features(self, classes: torch.Tensor) -> torch.Tensor:
        model = self.model
        ctx = self.ctx.unsqueeze(0).expand(len(classes), -1, -1)
        x = torch.cat([self.token_prefix[classes], ctx, self.token_suffix[classes]], dim=1)
        x = x + model.positional_embedding.to(x.dtype)
        x = model.transformer(x, attn_mask=model.attn_mask)
        x = model.ln_final(x)
        return x[torch.arange(len(classes), device=x.device), self.eot[classes]] @ model.text_projection

    def loss(self, images: torch.Tensor, labels: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        image = F.normalize(self.model.encode_image(images), dim=-1)  # frozen weights: no graph, as in CoOp
        classes = torch.cat([labels, negatives])  # every view's positive, then the negatives
        text = F.normalize(self.text_features(classes), dim=-1)
        return reference_loss(image, text, labels, negatives, self.logit_scale, self.num_classes)

    def __call__(self, images, labels, negatives) -> None:
        loss = self.loss(images, labels, negatives)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class OursStep:
    """``PompStep`` with the image tower in front of it, as the trainer runs it (CUDA graphs on a GPU unless
    ``cuda_graphs=False``)."""

    labels_on_device = False  # labels and negatives stay on the CPU, where the step is planned

    def __init__(
        self,
        clip_model: nn.Module,
        names: list[str],
        n_ctx: int,
        num_sampled: int,
        logit_scale: float,
        ctx: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
        images_per_step: int,
        compile_image_tower: bool = False,
        cuda_graphs: bool = True,
    ):
        self.model = copy.deepcopy(clip_model).to(device=device, dtype=dtype)
        # no silent fall-back to eager here: a failed compile must show as an error, not as a compiled time
        encode = compiled_image_encoder(self.model, fall_back=False) if compile_image_tower else None
        cuda_graphs = cuda_graphs and device.type == "cuda"
        self.image_features = image_feature_function(self.model, encode, cuda_graphs)
        self.encoder = PromptedTextEncoder.from_clip(self.model, n_ctx)
        with torch.no_grad():
            self.encoder.ctx.copy_(ctx)
        self.step = PompStep(
            self.encoder,
            self.encoder.tokenize(names, device="cpu"),
            logit_scale,
            num_sampled,
            LOG_BASE,
            sgd(self.encoder.ctx),
            cuda_graphs=cuda_graphs,
            max_positives=images_per_step,
        )

    def loss(self, images, labels, negatives) -> torch.Tensor:
        return self.step.loss(self.image_features(images), self.step.prepare(labels, negatives))

    def __call__(self, images, labels, negatives) -> None:
        inputs = self.step.prepare(labels, negatives)  # on the CPU, before the step's device work
        self.step(self.image_features(images), inputs)


def step_ctx(step) -> torch.Tensor:
    return step.encoder.ctx if isinstance(step, OursStep) else step.ctx


def ctx_agreement(start: torch.Tensor, final: dict, steps: int) -> dict:
    """How far ``ctx`` moved in ``steps`` identical steps, and how far apart the variants ended (a wrong gradient,
    e.g. a stale one under CUDA graphs, shows here, where the first batch's loss cannot show it)."""
    ours = final["ours"]
    result = {"steps": steps, "max_abs_movement_ours": float((ours - start.float()).abs().max())}
    for name, ctx in final.items():
        if name != "ours":
            result[f"max_abs_difference_ours_vs_{name}"] = float((ours - ctx).abs().max())
    return result


def cached_features(folder: Path, views: int, dim: int) -> np.ndarray:
    """A feature-cache file as the trainer writes it: ``[images, V, D]`` float16, normalised; memory-mapped."""
    path = folder / "features.npy"
    generator = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(CACHED_IMAGES, views, dim, generator=generator), dim=-1)
    array = np.lib.format.open_memmap(path, "w+", np.float16, tuple(features.shape))
    array[:] = features.half().numpy()
    array.flush()
    return np.load(path, mmap_mode="r")


def measure(step, device: torch.device, repeats: int, warmup: int, images_per_step: int) -> dict:
    seconds = time_call(step, device, repeats, warmup)
    return {"ms_per_step": 1e3 * seconds, "images_per_s": images_per_step / seconds}


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default=None, help="override the preset's device")
    parser.add_argument("--model", default=None, help="override the preset's CLIP model (open_clip name)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"the preset's code at tiny sizes ({DRY_RUN}), e.g. to check the GPU preset on a CPU",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant (median reported)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time ours with a torch.compile'd image tower (n_ctx 4), unless more than "
        f"{COMPILE_START_BUDGET_S} s have passed by then",
    )
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    script_started = time.perf_counter()

    settings = dict(PRESETS[args.preset])
    if args.dry_run:
        settings.update(DRY_RUN)
    if args.device:
        settings["device"] = args.device
    if args.model:
        settings["model"] = args.model
    if args.repeats:
        settings["repeats"] = args.repeats
    device = torch.device(settings["device"])
    ours_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    reference_dtype = torch.float16 if device.type == "cuda" else torch.float32
    batch, views = settings["batch"], settings["views"]

    base = load_clip(settings["model"], None, device="cpu", dtype="fp32")
    names = list(get_vocabulary("imagenet21k-p").names[: settings["classes"]])
    num_classes, num_sampled = len(names), settings["num_sampled"]
    size, width = base.image_size, base.model.token_embedding.embedding_dim
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch * views, 3, size, size, generator=generator)
    labels = torch.randint(num_classes, (batch,), generator=generator).repeat_interleave(views)
    negatives = [group_negatives(num_classes, num_sampled, 0, i, 0) for i in range(DISTINCT_STEPS)]

    def data_for(step, dtype):
        """The batch as this variant gets it: images in its dtype on the device, labels where it wants them."""
        where = device if step.labels_on_device else "cpu"
        return images.to(device=device, dtype=dtype), labels.to(where), [n.to(where) for n in negatives]

    def stepper(step, dtype):
        step_images, step_labels, step_negatives_, counter = *data_for(step, dtype), itertools.count()
        return lambda: step(step_images, step_labels, step_negatives_[next(counter) % DISTINCT_STEPS])

    result = {
        "benchmark": "pretrain_step",
        "preset": args.preset,
        "dry_run": args.dry_run,
        "machine": machine(device),
        "torch": torch.__version__,
        "model": f"{settings['model']} (random weights)",
        "classes": num_classes,
        "num_sampled": num_sampled,
        "images_per_step": batch,
        "views": views,
        "repeats": settings["repeats"],
        "dtypes": {
            "ours": f"{str(ours_dtype)[6:]} frozen weights, float32 ctx",
            "reference_style": f"{str(reference_dtype)[6:]} whole model and ctx",
        },
        "notes": [
            "images/s counts images (each seen as `views` views) per second of full training steps",
            "peak_gib: CUDA max_memory_allocated during the variant (its model copy included); on a CPU the "
            "rise of the process's peak RSS, which only grows, so only the first variant's is meaningful",
        ],
    }
    if device.type == "cpu":
        result["notes"].append("CPU: the reference-style step runs in fp32, since fp16 matmuls are not meaningful here")
    rows = result["results"] = {}

    def save() -> None:
        """Write what is measured so far: a variant that fails or runs out of time loses only itself."""
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    def variant(row: dict, name: str, measure_it) -> None:
        try:
            with PeakMemory(device) as memory:
                row[name] = measure_it()
            row[name]["peak_gib"] = memory.gib
        except Exception as error:  # noqa: BLE001 - recorded, and the other variants still run
            traceback.print_exc()
            row[name] = {"error": f"{type(error).__name__}: {error}"}
        free(device)
        save()

    # Lightest first, for the CPU's peak-RSS measure: feature cache, then ours, then reference-style.
    def feature_cache() -> dict:
        ctx = torch.randn(4, width, generator=torch.Generator().manual_seed(4)) * 0.02
        ours = OursStep(base.model, names, 4, num_sampled, base.logit_scale, ctx, ours_dtype, device, batch)
        picks = [
            np.sort(np.random.default_rng(i).choice(CACHED_IMAGES, batch, replace=False)) for i in range(DISTINCT_STEPS)
        ]
        counter = itertools.count()
        with tempfile.TemporaryDirectory() as folder:
            features = cached_features(Path(folder), views, base.model.visual.output_dim)

            def cached_step():
                i = next(counter) % DISTINCT_STEPS
                inputs = ours.step.prepare(labels, negatives[i])
                rows_of_features = to_device(torch.from_numpy(features[picks[i]]), device)  # pinned, as in training
                ours.step(rows_of_features.flatten(0, 1).float(), inputs)

            return measure(cached_step, device, settings["repeats"], settings["warmup"], batch)

    variant(rows, "feature_cache_n_ctx_4", feature_cache)

    for n_ctx in settings["n_ctx"]:
        ctx = torch.randn(n_ctx, width, generator=torch.Generator().manual_seed(n_ctx)) * 0.02
        entry = rows[f"n_ctx_{n_ctx}"] = {}
        variants = [
            ("ours", partial(OursStep, images_per_step=batch), ours_dtype),
            ("reference_style", ReferenceStyleStep, reference_dtype),
        ]
        if device.type == "cuda" and n_ctx == 4:  # what the CUDA graphs save
            variants.insert(
                1, ("ours_without_cuda_graphs", partial(OursStep, images_per_step=batch, cuda_graphs=False), ours_dtype)
            )
        final_ctx = {}
        for name, kind, dtype in variants:

            def measure_it(
                kind=kind, dtype=dtype, name=name, n_ctx=n_ctx, ctx=ctx, entry=entry, final_ctx=final_ctx
            ) -> dict:
                step = kind(base.model, names, n_ctx, num_sampled, base.logit_scale, ctx, dtype, device)
                first_images, first_labels, first_negatives = data_for(step, dtype)
                with torch.no_grad():
                    entry[f"loss_first_batch_{name}"] = float(step.loss(first_images, first_labels, first_negatives[0]))
                timing = measure(stepper(step, dtype), device, settings["repeats"], settings["warmup"], batch)
                final_ctx[name] = step_ctx(step).detach().float().cpu()  # after warmup + repeats identical steps
                if name == "ours":
                    forward = lambda: step.image_features(first_images)  # noqa: E731
                    timing["image_forward_ms"] = 1e3 * time_call(forward, device, settings["repeats"], 1)
                return timing

            variant(entry, name, measure_it)
        if "error" in entry["ours"] or "error" in entry["reference_style"]:
            continue
        entry["speedup"] = entry["ours"]["images_per_s"] / entry["reference_style"]["images_per_s"]
        if device.type == "cuda":  # a CPU's peak-RSS rise says little after the first variant
            entry["memory_ratio"] = entry["reference_style"]["peak_gib"] / entry["ours"]["peak_gib"]
        entry["loss_abs_difference"] = abs(entry["loss_first_batch_ours"] - entry["loss_first_batch_reference_style"])
        entry["ctx_after_steps"] = ctx_agreement(ctx, final_ctx, settings["warmup"] + settings["repeats"])

    if args.compile:

        def compiled() -> dict:
            ctx = torch.randn(4, width, generator=torch.Generator().manual_seed(4)) * 0.02
            step = OursStep(
                base.model,
                names,
                4,
                num_sampled,
                base.logit_scale,
                ctx,
                ours_dtype,
                device,
                batch,
                compile_image_tower=True,
            )
            step_images, step_labels, step_negatives_ = data_for(step, ours_dtype)
            started = time.perf_counter()
            step(step_images, step_labels, step_negatives_[0])  # compiles
            synchronize(device)
            compile_seconds = time.perf_counter() - started
            timing = measure(stepper(step, ours_dtype), device, settings["repeats"], settings["warmup"], batch)
            return {**timing, "first_step_seconds_with_compile": compile_seconds}

        if time.perf_counter() - script_started < COMPILE_START_BUDGET_S:
            variant(rows["n_ctx_4"], "ours_compiled_image_tower", compiled)
        else:
            rows["n_ctx_4"]["ours_compiled_image_tower"] = {"error": "skipped: the time budget was spent"}

    reference_4, ours_4 = rows["n_ctx_4"]["reference_style"], rows["n_ctx_4"]["ours"]
    cache = rows["feature_cache_n_ctx_4"]
    if "error" not in cache and "error" not in reference_4:
        cache["speedup_vs_reference_style"] = cache["images_per_s"] / reference_4["images_per_s"]
    if args.dry_run:
        result["targets"] = "not checked in a dry run (sizes shrunk)"
    elif device.type == "cuda":
        result["targets"] = {
            "ours_n_ctx_4_at_most_20_ms": ours_4.get("ms_per_step", float("inf")) <= 20.0,
            "ours_n_ctx_4_at_most_2.5_gib": ours_4.get("peak_gib", float("inf")) <= 2.5,
            "feature_cache_at_least_10x_reference_images_per_s": cache.get("speedup_vs_reference_style", 0) >= 10.0,
        }
    else:
        result["targets"] = {"ours_at_least_3x_reference_images_per_s": rows["n_ctx_4"].get("speedup", 0) >= 3.0}
    save()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
