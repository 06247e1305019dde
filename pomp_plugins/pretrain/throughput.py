"""How fast training runs end to end, and how much of it the step spends waiting for data.

``OUTPUT/throughput.json`` (main process, rewritten at every stop and at the end): steps, images and seconds of
this invocation without its first step (data-loader start-up, CUDA-graph capture, lazy initialisation), and the
seconds spent blocked on the data loader. ``data_wait_share`` near 0: the step is the bottleneck; near 1: data
loading (decode + augmentation) is, and more ``--workers`` (or the feature cache) would help.
"""

from __future__ import annotations

import time

import torch


class ThroughputMeter:
    """Step wall times and data-loader waits of one process, first ``skip_steps`` steps excluded."""

    def __init__(self, device: torch.device, skip_steps: int = 1):
        self.device, self.skip_steps = device, skip_steps
        self.steps_seen = 0
        self.steps = self.images = 0
        self.seconds = self.data_wait_seconds = 0.0
        self._wait = 0.0
        self._last = time.perf_counter()

    def waited(self, seconds: float) -> None:
        self._wait += seconds

    def step_done(self, images: int) -> None:
        now = time.perf_counter()
        self.steps_seen += 1
        if self.steps_seen > self.skip_steps:
            self.steps += 1
            self.images += images
            self.seconds += now - self._last
            self.data_wait_seconds += self._wait
        self._wait, self._last = 0.0, now

    def summary(self, world_size: int) -> dict:
        """Totals so far; waits for the device first, so queued work counts (on a GPU the host runs ahead)."""
        if self.device.type == "cuda":
            started = time.perf_counter()
            torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - started
        seconds = max(self.seconds, 1e-9)
        return {
            "steps_timed": self.steps,
            "steps_skipped": min(self.steps_seen, self.skip_steps),
            "images_this_process": self.images,
            "seconds": self.seconds,
            "images_per_s_all_processes": self.images * world_size / seconds,
            "data_wait_seconds": self.data_wait_seconds,
            "data_wait_share": self.data_wait_seconds / seconds,
        }
