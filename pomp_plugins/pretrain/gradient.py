"""The one home of ``ctx``'s gradient: a persistent buffer that every group's gradient is added into.

A step of the POMP recipe is several groups (each with its own sampled negatives), possibly on several processes.
Their gradients are summed, weighted by feature rows, into one float32 buffer ``[numel + 1]`` (the last element
counts the rows), which is all-reduced in place across processes and divided by the total rows: the step's
gradient is the mean over all rows of all groups (for full groups: the mean over groups, as the reference's DDP
average over its GPUs). ``parameter.grad`` is a view of that buffer, set once and never replaced, so the optimiser
always reads it, whether the group gradients came from eager autograd or from CUDA-graph replays.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GradientBuffer:
    """Rows-weighted sum of group gradients of ``parameter`` (float32, same shape), then their mean.

    ``parameter.grad`` is this buffer's view for the buffer's whole life: anything that replaces it (e.g.
    ``optimizer.zero_grad()``, which sets it to ``None``) is an error that ``average`` reports.
    """

    def __init__(self, parameter: torch.Tensor):
        self.parameter = parameter
        self.flat = torch.zeros(parameter.numel() + 1, dtype=torch.float32, device=parameter.device)
        self.grad = self.flat[:-1].view_as(parameter)
        parameter.grad = self.grad
        self.local_rows = 0

    def zero(self) -> None:
        self.flat.zero_()
        self.local_rows = 0

    def add(self, gradient: torch.Tensor, rows: int) -> None:
        """Add the gradient of a loss that is a mean over ``rows`` feature rows (so: ``rows * gradient``)."""
        self.grad.add_(gradient, alpha=rows)
        self.local_rows += rows

    def average(self, all_reduce_: Callable[[torch.Tensor], object] | None = None) -> int:
        """Make ``parameter.grad`` the mean over every row added here (and, with ``all_reduce_``, on every process).

        ``all_reduce_`` sums a tensor in place across processes. Returns the total number of rows (0: no gradient;
        the caller should then skip the optimiser step).
        """
        if self.parameter.grad is not self.grad:
            raise RuntimeError(
                "the parameter's .grad was replaced (e.g. by optimizer.zero_grad()); the gradient "
                "buffer must stay its only home"
            )
        if all_reduce_ is None:
            total = self.local_rows
        else:
            self.flat[-1] = self.local_rows
            all_reduce_(self.flat)
            total = int(self.flat[-1].item())  # exact: row counts stay far below 2**24
        if total:
            self.grad.div_(total)
        return total
