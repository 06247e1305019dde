"""Timing and peak-memory helpers shared by the benchmarks (one process, one device, warm-up first)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    """A short description of where the benchmark ran, for the results file."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


class PeakMemory:
    """Peak memory of a block, in GiB.

    CUDA: ``torch.cuda.max_memory_allocated`` since the block started. CPU: the rise of the process's resident
    high-water mark, which only grows, so on CPU measure the lighter variant first.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.gib = 0.0

    @staticmethod
    def _rss_gib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**30
        else:
            self._start = self._rss_gib()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self.gib = max(self._rss_gib() - self._start, 0.0)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def provenance() -> dict:
    """What a result was measured with: the commit (``-dirty`` with uncommitted changes outside bench/results), CPU
    threads, the command, torch and the date (``bench/provenance.py`` reconstructs this from git for older
    results)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "--short", "HEAD")
    # results written earlier in the same series of runs are not changes to the timed code
    if commit and git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"):
        commit += "-dirty"
    return {
        "commit": commit,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "recorded": "by the benchmark",
    }


def write_result(result: dict, out: str | None) -> None:
    """Print ``result`` as indented JSON with its ``provenance``, and also write it to ``out`` when given."""
    result = {**result, "provenance": {"machine": result.get("machine"), **provenance()}}
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
