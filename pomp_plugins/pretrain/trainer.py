"""The pre-training loop: from a ``PretrainConfig`` to a prompt file, on a CPU, a GPU, or many under torchrun.

Outputs, in ``config.output``: ``config.json`` (the resolved settings), ``split.json`` (the few-shot split),
``checkpoints/last.pt`` (every epoch, and every N steps if asked), ``prompts/epoch_<e>.pt`` (the prompt after each
epoch), ``tensorboard/`` (scalars), ``feature_cache/`` (feature-cache mode), ``throughput.json`` (images/s and the
share of time spent waiting for data, at every stop), and at the end ``prompt.pt`` (the learned prompt in the
core's format) and ``summary.json`` (validation history, skipped images).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..images.accuracy import evaluate
from ..images.features import compiled_image_encoder, model_dtype
from ..images.folder import Batch, ImageListDataset, collate_skipping
from ..prompt.atomic import atomic_write_text
from ..prompt.clip import load_clip
from ..prompt.loss import correction_margin
from ..prompt.prompt_file import Prompt, save_prompt
from ..prompt.text_encoder import PromptedTextEncoder, encode_in_batches
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import PretrainConfig, PretrainError
from .data import PROMPT_INIT, GroupSampler, MultiViewDataset, PixelNormalizer, derive_seed, train_augmentation
from .distributed import Distributed, init_distributed
from .feature_cache import CachedFeatureDataset, build_feature_cache, cache_key
from .objective import PompStep, group_negatives, image_feature_function
from .split import FewShotSplit, prepare_split
from .throughput import ThroughputMeter


@dataclass
class RunState:
    """Where a run stands; all of it goes into checkpoints.

    ``epoch``: the epoch in progress; ``step_in_epoch``: its steps already done; ``loss_sum``/``rows``: this
    epoch's summed loss and feature rows so far (this process's groups; in a checkpoint: all processes');
    ``skipped``: unreadable images seen;
    ``history``: one record per finished epoch.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    rows: int = 0
    skipped: set = field(default_factory=set)
    history: list = field(default_factory=list)


def learning_rate_factor(config: PretrainConfig, epoch: int) -> float:
    """Multiplier of ``config.lr`` in ``epoch`` (0-based): the reference's schedule, stepped once per epoch.

    ``warmup_epochs`` at the constant ``warmup_lr``, then cosine from ``lr`` over ``epochs`` counted from the end of
    the warm-up (Dassl's ``ConstantWarmupScheduler`` around ``CosineAnnealingLR(T_max=epochs)``).
    """
    if epoch < config.warmup_epochs:
        return config.warmup_lr / config.lr
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - config.warmup_epochs) / config.epochs))


class Pretrainer:
    """One process's part of a run. Build it with a resolved config and the process group, then ``run()``."""

    def __init__(self, config: PretrainConfig, dist: Distributed):
        self.config, self.dist = config, dist
        config.check_world_size(dist.world_size)
        self.out = Path(config.output)
        resume_from = self._checkpoint_to_resume()
        self._write_config()
        self.split = self._few_shot_split()
        self.clip = load_clip(config.clip_model, config.clip_pretrained, device=dist.device, dtype=config.dtype)
        self.encoder = self._prompted_encoder()
        self.class_prompts = self.encoder.tokenize(self.split.names, device="cpu")
        self.normalize = self._pixel_normalizer()
        self.cuda_graphs = config.cuda_graphs and dist.device.type == "cuda"
        self.image_features = self._image_feature_function()
        self.num_sampled = self._classes_per_group()
        self.optimizer, self.scheduler = self._optimizer_and_schedule()
        self.step = self._pomp_step()
        self.state = RunState()
        self.train_data = self._train_dataset()
        if resume_from is not None:
            self._restore(resume_from)
        self.epoch_loss = torch.tensor(self.state.loss_sum, dtype=torch.float64, device=dist.device)
        self.throughput = ThroughputMeter(dist.device)
        self.writer = self._tensorboard_writer()

    # ----------------------------------------------------------------------------------------------- set-up
    def log(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(f"[pomp] {message}")

    def _checkpoint_to_resume(self) -> dict | None:
        """The checkpoint ``config.resume`` names, checked against this run's settings; ``None``: start afresh."""
        if not self.config.resume:
            return None
        path = self.out / "checkpoints" / "last.pt" if self.config.resume == "auto" else Path(self.config.resume)
        if self.config.resume == "auto" and not path.exists():  # detectron2's convention: a first run starts afresh
            self.log(f"--resume auto: no checkpoint at {path} yet, starting from scratch")
            return None
        state = load_checkpoint(path)
        different = PretrainConfig.from_dict(state["config"]).differences(self.config)
        if different:
            raise PretrainError(
                f"{path} belongs to a run with other settings {different} (checkpoint, now); "
                "resume with the same settings or start a new run"
            )
        return state

    def _write_config(self) -> None:
        """``OUTPUT/config.json``: the resolved settings (main process)."""
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(self.config.to_dict(), indent=2) + "\n")

    def _few_shot_split(self) -> FewShotSplit:
        """The split file's split, drawn and written first by the main process if there is none yet."""
        config = self.config
        return prepare_split(
            config.split_file or self.out / "split.json",
            config.data,
            self.dist.is_main,
            self.dist.barrier,
            shots=config.shots,
            val_per_class=config.val_per_class,
            seed=config.seed,
            vocabulary=config.vocabulary,
            names_file=config.names_file,
            allow_unnamed=config.allow_unnamed,
        )

    def _prompted_encoder(self) -> PromptedTextEncoder:
        """A fresh prompt (from the run seed, or from ``ctx_init``) on the frozen text tower."""
        config = self.config
        return PromptedTextEncoder.from_clip(
            self.clip.model,
            config.n_ctx,
            init=config.ctx_init,
            std=config.ctx_std,
            generator=torch.Generator().manual_seed(derive_seed(config.seed, PROMPT_INIT)),
        )

    def _pixel_normalizer(self) -> PixelNormalizer:
        preprocess = self.clip.model.visual.preprocess_cfg
        return PixelNormalizer(preprocess["mean"], preprocess["std"], self.dist.device)

    def _image_feature_function(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The frozen image tower's features, compiled and/or replayed as CUDA graphs as configured."""
        encode = compiled_image_encoder(self.clip.model) if self.config.compile_image_tower else None
        return image_feature_function(self.clip.model, encode, self.cuda_graphs)

    def _classes_per_group(self) -> int:
        """K, capped at the number of classes (then a full softmax, with a notice)."""
        requested, classes = self.config.num_sampled, len(self.split.names)
        if classes < requested:
            self.log(
                f"K={requested} classes per step, but the data has {classes}: using all {classes} (a full softmax)"
            )
        return min(requested, classes)

    def _optimizer_and_schedule(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """SGD on ``ctx`` and the reference's per-epoch schedule (``learning_rate_factor``)."""
        config = self.config
        optimizer = torch.optim.SGD(
            [self.encoder.ctx], lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, partial(learning_rate_factor, config))

    def _pomp_step(self) -> PompStep:
        return PompStep(
            self.encoder,
            self.class_prompts,
            self.clip.logit_scale,
            self.num_sampled,
            self.config.log_base,
            self.optimizer,
            self.dist.sum_ if self.dist.active else None,
            cuda_graphs=self.cuda_graphs,
            max_positives=self.config.group_size,
        )

    def _tensorboard_writer(self):
        """A ``SummaryWriter`` on ``OUTPUT/tensorboard`` in the main process (dropping events after a resumed
        step), ``None`` in the others."""
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(self.out / "tensorboard", purge_step=self.state.global_step or None)

    def _train_dataset(self) -> Dataset:
        """The training images' augmented views, or in feature-cache mode their cached features."""
        config = self.config
        paths, labels = self.split.paths(config.data, "train")
        augment = train_augmentation(
            self.clip.image_size,
            config.crop_scale_min,
            config.randaugment_ops,
            config.randaugment_magnitude,
            config.randaugment,
            config.randaugment_prob,
        )
        views = MultiViewDataset(paths, labels, augment, config.views, config.seed)
        if not config.cache_image_features:
            return views
        return self._cached_feature_dataset(views, paths, labels)

    def _cached_feature_dataset(self, views: MultiViewDataset, paths: list[str], labels: list[int]) -> Dataset:
        """The image features of ``views``, from ``OUTPUT/feature_cache`` (built or rebuilt first if needed)."""
        config = self.config
        settings = {
            "image_size": self.clip.image_size,
            "crop_scale_min": config.crop_scale_min,
            "randaugment": [
                config.randaugment,
                config.randaugment_ops,
                config.randaugment_prob,
                config.randaugment_magnitude,
            ],
            "dtype": str(model_dtype(self.clip.model.visual)),
        }
        started = time.perf_counter()
        cache = build_feature_cache(
            self.out / "feature_cache",
            cache_key(self.clip, views, settings),
            views,
            self.clip,
            self.normalize,
            self.dist,
            config.group_size,
            config.workers,
            config.progress,
        )
        self.log(
            f"feature cache ready: {len(paths)} images x {config.views} views in "
            f"{time.perf_counter() - started:.1f} s ({self.out / 'feature_cache'})"
        )
        self.state.skipped |= set(cache.skipped)
        return CachedFeatureDataset(cache, paths, labels)

    def _restore(self, state: dict) -> None:
        with torch.no_grad():
            self.encoder.ctx.copy_(state["ctx"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # the epoch's loss so far is the sum over all processes: one process (the main one) carries it on
        loss_sum, rows = (state["loss_sum"], state["rows"]) if self.dist.is_main else (0.0, 0)
        self.state = RunState(
            state["epoch"],
            state["step_in_epoch"],
            state["global_step"],
            loss_sum,
            rows,
            set(state["skipped"]) | self.state.skipped,
            state["history"],
        )
        rng = state["rng"]
        set_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        self.log(
            f"resumed from step {self.state.global_step} (epoch {self.state.epoch + 1}, "
            f"batch {self.state.step_in_epoch})"
        )

    # ---------------------------------------------------------------------------------------------- the run
    def run(self) -> Path | None:
        """Train to the last epoch and write the prompt; ``None`` if stopped early by ``stop_after_steps``."""
        steps = GroupSampler.steps_per_epoch(len(self.train_data), self.config.group_size, self.config.groups_per_step)
        self._log_run_plan(steps)
        while self.state.epoch < self.config.epochs:
            started = time.perf_counter()
            if not self._train_epoch(steps):
                return None
            self._end_epoch(time.perf_counter() - started)
        return self._finish()

    def _log_run_plan(self, steps: int) -> None:
        """The data, the local contrast and the schedule this run trains with; the class folders without images."""
        config, dist = self.config, self.dist
        margin = "off"
        if config.log_base is not None:
            value = correction_margin(len(self.class_prompts), self.num_sampled, torch.tensor([0]), config.log_base)
            margin = f"{value.item():.3f}"
        self.log(
            f"{len(self.split.names)} classes, {len(self.split.train)} training and {len(self.split.val)} "
            f"validation images, {config.views} views; K={self.num_sampled}, correction margin {margin}; "
            f"{config.global_batch} images per step in {config.groups_per_step} groups of {config.group_size}; "
            f"{dist.world_size} process(es) on {dist.device}, {steps} steps per epoch, {config.epochs} epochs"
        )
        if self.split.empty_classes:
            self.log(
                f"warning: {len(self.split.empty_classes)} class folders have no images: "
                f"{', '.join(self.split.empty_classes[:10])}"
            )

    def _end_epoch(self, seconds: float) -> None:
        """Validate and record the finished epoch, step the schedule, checkpoint, write the epoch's prompt."""
        totals = self.dist.sum_(torch.stack([self.epoch_loss, self.epoch_loss.new_tensor(self.state.rows)]))
        record = {
            "epoch": self.state.epoch + 1,
            "lr": self.scheduler.get_last_lr()[0],
            "train_loss": float(totals[0] / totals[1].clamp(min=1)),
            "seconds": seconds,
            "validation": self._validate(),
        }
        self.state.history.append(record)
        self._log_epoch(record)
        self.scheduler.step()
        self.state.epoch += 1
        self.state.step_in_epoch, self.state.rows = 0, 0
        self.epoch_loss.zero_()
        self._save_checkpoint()
        if self.dist.is_main:
            epoch_prompt = self.out / "prompts" / f"epoch_{self.state.epoch}.pt"
            save_prompt(self._prompt({"epoch": self.state.epoch}), epoch_prompt)

    def _train_epoch(self, steps: int) -> bool:
        """The rest of the current epoch; False if ``stop_after_steps`` stopped it (after a checkpoint)."""
        config, state = self.config, self.state
        sampler = self._group_sampler()
        groups = iter(self._group_loader(sampler))
        bar = tqdm(
            total=steps,
            initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{config.epochs}",
            unit="step",
            disable=not (config.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        logged_loss, logged_rows = state.loss_sum, state.rows
        window_images, window_start = 0, time.perf_counter()
        while state.step_in_epoch < steps:
            if config.stop_after_steps is not None and state.global_step >= config.stop_after_steps:
                bar.close()
                self._stop_early()
                return False
            window_images += self._train_step(sampler, groups)
            state.step_in_epoch += 1
            state.global_step += 1
            bar.update()
            if state.global_step % config.log_every == 0 or state.step_in_epoch == steps:
                self._log_training(bar, logged_loss, logged_rows, window_images, window_start)
                logged_loss, logged_rows = state.loss_sum, state.rows
                window_images, window_start = 0, time.perf_counter()
            if config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0:
                self._save_checkpoint()
        bar.close()
        return True

    def _group_sampler(self) -> GroupSampler:
        """This rank's groups of the current epoch, from the step the run is at."""
        config, dist = self.config, self.dist
        return GroupSampler(
            len(self.train_data),
            config.group_size,
            config.groups_per_step,
            dist.rank,
            dist.world_size,
            config.seed,
            self.state.epoch,
            start=self.state.step_in_epoch,
        )

    def _group_loader(self, sampler: GroupSampler) -> DataLoader:
        """A batch per group of ``sampler`` (unreadable images skipped), with the global RNG untouched."""
        return DataLoader(
            self.train_data,
            batch_sampler=sampler,
            num_workers=self.config.workers,
            collate_fn=collate_skipping,
            pin_memory=self.dist.device.type == "cuda",
            generator=torch.Generator(),
        )

    def _train_step(self, sampler: GroupSampler, groups: Iterator[Batch]) -> int:
        """One optimisation step: this rank's groups of it, then the update; returns the images trained on."""
        step_images = sum(self._accumulate_group(number, groups) for number in sampler.groups_of_rank())
        self.step.apply()  # every process, even one whose groups were empty (the all-reduce needs them all)
        self.throughput.step_done(step_images)
        return step_images

    def _accumulate_group(self, number: int, groups: Iterator[Batch]) -> int:
        """The next group's loss and gradient (group ``number`` of the step), added to the step's; its images."""
        config, state = self.config, self.state
        fetch_started = time.perf_counter()
        batch = next(groups)
        self.throughput.waited(time.perf_counter() - fetch_started)
        state.skipped.update(batch.skipped)
        if not len(batch):
            return 0
        negatives = group_negatives(len(self.class_prompts), self.num_sampled, config.seed, state.global_step, number)
        inputs = self.step.prepare(batch.labels.repeat_interleave(config.views), negatives)
        loss = self.step.accumulate(self._image_features(batch), inputs)
        self.epoch_loss += loss.double() * inputs.rows
        state.rows += inputs.rows
        return len(batch)

    def _log_training(self, bar: tqdm, since_loss: float, since_rows: int, images: int, started: float) -> None:
        """Mean loss and images/s since the last log (loss sum ``since_loss`` over ``since_rows`` rows then),
        on the progress bar and in tensorboard."""
        state = self.state
        state.loss_sum = float(self.epoch_loss)  # one device sync per log interval
        mean_loss = (state.loss_sum - since_loss) / max(state.rows - since_rows, 1)
        images_per_s = images * self.dist.world_size / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_s:.1f}")
        if self.writer is not None:
            self.writer.add_scalar("train/loss", mean_loss, state.global_step)
            self.writer.add_scalar("train/images_per_s", images_per_s, state.global_step)
            self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], state.global_step)

    def _stop_early(self) -> None:
        """``stop_after_steps`` reached: checkpoint, write the throughput, say how to continue."""
        self._save_checkpoint()
        self._write_throughput()
        self.log(f"stopped after {self.state.global_step} steps; continue with --resume")

    def _image_features(self, batch: Batch) -> torch.Tensor:
        """Normalised image features ``[B*V, D]``, view after view of image after image."""
        if not len(batch):
            return torch.empty(0, device=self.dist.device)
        data = batch.data.to(self.dist.device, non_blocking=True).flatten(0, 1)
        if self.config.cache_image_features:
            return data.float()
        return self.image_features(self.normalize(data, self.encoder.tower.dtype))

    def _validate(self) -> dict | None:
        """Zero-shot accuracy over all classes on the held-out images, split across ranks; None without any."""
        paths, labels = self.split.paths(self.config.data, "val")
        if not paths:
            return None
        rank, world = self.dist.rank, self.dist.world_size
        loader = DataLoader(
            ImageListDataset(paths[rank::world], labels[rank::world], self.clip.preprocess),
            batch_size=self.config.group_size * self.config.views,
            num_workers=self.config.workers,
            collate_fn=collate_skipping,
            pin_memory=self.dist.device.type == "cuda",
        )
        with torch.no_grad():
            text = encode_in_batches(self.encoder, self.class_prompts, 1024, normalize=True, progress=False)
        counts, skipped = evaluate(
            self.clip, text, loader, progress=self.config.progress and self.dist.is_main, total=len(loader)
        )
        self.state.skipped.update(skipped)
        self.dist.sum_(counts.counts)
        return counts.summary()

    def _log_epoch(self, record: dict) -> None:
        validation = record["validation"]
        accuracy = (
            ""
            if validation is None
            else (
                f", validation top-1 {validation['top1']:.2f}% top-5 {validation['top5']:.2f}% "
                f"({validation['images']} images)"
            )
        )
        self.log(
            f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, lr {record['lr']:.2e}, "
            f"{record['seconds']:.1f} s{accuracy}"
        )
        if self.writer is not None:
            self.writer.add_scalar("epoch/train_loss", record["train_loss"], record["epoch"])
            if validation is not None:
                for metric in ("top1", "top5", "mean_per_class"):
                    self.writer.add_scalar(f"val/{metric}", validation[metric], record["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    # ------------------------------------------------------------------------------------------- outputs
    def _save_checkpoint(self) -> None:
        """Every rank takes part (its RNG state, epoch loss and skipped images); the main process writes."""
        self.state.loss_sum = float(self.epoch_loss)
        totals = self.dist.sum_(
            torch.tensor([self.state.loss_sum, float(self.state.rows)], dtype=torch.float64, device=self.dist.device)
        )
        rng = self.dist.gather(rng_state())
        skipped = sorted(set().union(*self.dist.gather(sorted(self.state.skipped))))
        if self.dist.is_main:
            state = self.state
            save_checkpoint(
                self.out / "checkpoints" / "last.pt",
                {
                    "ctx": self.encoder.ctx.detach().cpu(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "epoch": state.epoch,
                    "step_in_epoch": state.step_in_epoch,
                    "global_step": state.global_step,
                    "loss_sum": float(totals[0]),
                    "rows": int(totals[1]),
                    "skipped": skipped,
                    "history": state.history,
                    "config": self.config.to_dict(),
                    "rng": rng,
                    "world_size": self.dist.world_size,
                },
            )
        self.dist.barrier()

    def _write_throughput(self) -> None:
        summary = self.throughput.summary(self.dist.world_size)
        if self.dist.is_main:
            summary = {
                **summary,
                "workers": self.config.workers,
                "world_size": self.dist.world_size,
                "device": str(self.dist.device),
                "cache_image_features": self.config.cache_image_features,
            }
            atomic_write_text(self.out / "throughput.json", json.dumps(summary, indent=2) + "\n")

    def _prompt(self, extra: dict) -> Prompt:
        config = self.config
        meta = {
            "method": "POMP",
            "n_ctx": config.n_ctx,
            "num_classes": len(self.class_prompts),
            "num_sampled": self.num_sampled,
            "log_base": config.log_base,
            "epochs": config.epochs,
            "shots": config.shots,
            "seed": config.seed,
            "world_size": self.dist.world_size,
            "data": config.data,
            "vocabulary": config.vocabulary,
            **extra,
        }
        return Prompt(
            self.encoder.ctx.detach().cpu(),
            self.clip.name,
            self.clip.pretrained,
            meta=meta,
            clip_quick_gelu=self.clip.quick_gelu,
        )

    def _finish(self) -> Path:
        ctx = self.encoder.ctx.detach().cpu().contiguous()
        digests = self.dist.gather(hashlib.sha256(ctx.numpy().tobytes()).hexdigest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"the processes ended with different prompts (sha256 by rank: {digests})")
        skipped = sorted(set().union(*self.dist.gather(sorted(self.state.skipped))))
        prompt_path = self.out / "prompt.pt"
        self._write_throughput()
        if self.dist.is_main:
            save_prompt(self._prompt({"history": self.state.history}), prompt_path)
            summary = {
                "prompt": str(prompt_path),
                "steps": self.state.global_step,
                "epochs": self.config.epochs,
                "world_size": self.dist.world_size,
                "ctx_sha256_by_rank": digests,
                "history": self.state.history,
                "skipped_images": len(skipped),
                "skipped_paths": skipped,
                "empty_classes": self.split.empty_classes,
            }
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
            if skipped:
                self.log(
                    f"skipped {len(skipped)} unreadable images (listed in {self.out / 'summary.json'}), "
                    f"e.g. {skipped[:3]}"
                )
            if self.split.empty_classes:
                self.log(
                    f"{len(self.split.empty_classes)} class folders had no images: "
                    f"{', '.join(self.split.empty_classes[:10])}"
                )
            self.log(f"prompt written to {prompt_path}")
        self.dist.barrier()
        return prompt_path


def pretrain(config: PretrainConfig) -> Path | None:
    """Run (or continue) pre-training as ``config`` says, in this process's part of the process group.

    Returns the prompt file, or ``None`` if the run stopped early (``stop_after_steps``).
    """
    config = config.resolved()
    config.check()
    dist = init_distributed(config.device)
    try:
        trainer = Pretrainer(config, dist)
        try:
            return trainer.run()
        finally:
            trainer.close()
    finally:
        dist.close()
