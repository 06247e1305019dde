"""Replaying fixed-shape GPU work as CUDA graphs, so a step costs the GPU's time and not the CPU's.

A POMP step is a few thousand small kernels (12 text layers, forward and backward, over ~1,000 short prompts):
eagerly, launching them takes longer than running them. Captured once as a CUDA graph, a step is one launch.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch


class CapturedFunction:
    """``fn`` of CUDA tensors, captured as a CUDA graph on the first call for each input shape and replayed after.

    Each call copies its inputs into the graph's static input buffers and replays the graph; the returned tensors
    are the graph's static outputs, overwritten by the next call (clone what must outlive it). ``fn`` may run a
    backward pass: parameter gradients then live in the graph's memory and each replay overwrites them, so
    callers must not set them to ``None`` between calls. ``before_capture`` runs before warm-up and capture (e.g.
    to drop gradients that warm-up accumulated).

    Requirements of CUDA graphs: fixed shapes per captured signature, no CPU-GPU synchronisation inside ``fn``,
    and no use of the outputs from a previous call after the next one.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], warmup: int = 2,
                 before_capture: Optional[Callable[[], None]] = None):
        self.fn, self.warmup, self.before_capture = fn, warmup, before_capture
        self.graphs: dict = {}
        self.pool = None

    @staticmethod
    def signature(inputs: Sequence[torch.Tensor]) -> tuple:
        return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)

    def __call__(self, *inputs: torch.Tensor):
        key = self.signature(inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, static_inputs, outputs = self.graphs[key]
        for static, value in zip(static_inputs, inputs):
            static.copy_(value, non_blocking=True)
        graph.replay()
        return outputs

    def _capture(self, inputs: Sequence[torch.Tensor]):
        static_inputs = [t.detach().clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (lazy initialisation, autotuning) outside the capture
            if self.before_capture:
                self.before_capture()
            for _ in range(self.warmup):
                self.fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        if self.before_capture:
            self.before_capture()
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.fn(*static_inputs)
        return graph, static_inputs, outputs
