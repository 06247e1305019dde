"""Replaying fixed-shape GPU work as CUDA graphs, so a step costs the GPU's time and not the CPU's.

A POMP step is a few thousand small kernels (12 text layers, forward and backward, over ~1,000 short prompts):
eagerly, launching them takes longer than running them. Captured once as a CUDA graph, a step is one launch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class CapturedFunction:
    """A pure ``fn`` of CUDA tensors, captured as a CUDA graph on the first call for each input shape, replayed after.

    Each call copies its inputs into that graph's static input buffers, replays it and returns its static outputs.
    All graphs of one ``CapturedFunction`` share a memory pool, so a replay may overwrite the outputs of *any*
    earlier call, of any shape: consume (copy, accumulate) the outputs before the next call.

    ``fn`` must be pure: its results only in what it returns. A gradient belongs in the returned tensors
    (``torch.autograd.grad``), never in ``parameter.grad``: a captured ``backward()`` would leave each graph
    writing into a ``.grad`` tensor of its own, in the graph's memory, which the optimiser does not read.
    Also required: fixed shapes per signature and no CPU-GPU synchronisation inside ``fn``.
    """

    def __init__(self, fn: Callable[..., object], warmup: int = 2):
        self.fn, self.warmup = fn, warmup
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
            for _ in range(self.warmup):
                self.fn(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.fn(*static_inputs)
        return graph, static_inputs, outputs
