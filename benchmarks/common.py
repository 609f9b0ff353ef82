"""What every benchmark part shares: the machine line, interleaved timing, peak memory, tables.

Timing is always *interleaved*: the contenders of one configuration run once each per round, in
an order rotated every round, so a load spike from another process hits all of them alike; a
ratio divides medians. Memory is the peak of bytes allocated *during* a call, by the allocator of
the device it runs on (see :func:`peak_memory`).
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

MIB = 2 ** 20


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def machine_info(threads: int, cuda: bool) -> str:
    """One line naming what the numbers were measured on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"CPU {cpu_model()} ({os.cpu_count()} logical cores, {usable} usable)"]
    if cuda:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        parts.append(f"GPU {props.name} ({props.total_memory / 2 ** 30:.0f} GiB, CUDA {torch.version.cuda})")
    else:
        parts.append("no CUDA device")
    parts += [f"torch {torch.__version__}", f"torch threads {threads}", f"numpy {np.__version__}",
              f"Python {platform.python_version()}", platform.platform(terse=True)]
    try:
        import hmmlearn
        parts.insert(-2, f"hmmlearn {hmmlearn.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


@contextlib.contextmanager
def torch_threads(threads: int):
    """``torch.set_num_threads(threads)`` for the block, the previous setting restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronizer(device) -> Callable[[], None]:
    """Waits for queued kernels on CUDA (so a timer sees the work), a no-op on CPU."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def interleaved_medians(fns: dict[str, Callable[[], object]], budget: float, min_rounds: int, max_rounds: int,
                        sync: Callable[[], None] = lambda: None,
                        clock: Callable[[], float] = time.perf_counter) -> tuple[dict[str, float], int]:
    """Median seconds of each callable, and the number of rounds: in a round every callable runs
    once, in an order rotated each round (so that drifting load hits all of them alike); rounds go
    on until ``budget`` seconds are spent, within [min_rounds, max_rounds]. ``clock`` times each call
    (``time.process_time``: the CPU seconds this process spent, robust to other processes' load)."""
    names, times = list(fns), {name: [] for name in fns}
    start = time.perf_counter()
    for r in range(max_rounds):
        if r >= min_rounds and time.perf_counter() - start > budget:
            break
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync()
            tick = clock()
            fns[name]()
            sync()
            times[name].append(clock() - tick)
    return {name: statistics.median(ts) for name, ts in times.items()}, len(times[names[0]])


def warm_then_time(fns: dict, budget: float, min_rounds: int, max_rounds: int, device="cpu",
                   clock: Callable[[], float] = time.perf_counter):
    """One untimed round (allocator, caches, lazy tables), then :func:`interleaved_medians`."""
    sync = synchronizer(device)
    interleaved_medians(fns, 0.0, 1, 1, sync)
    return interleaved_medians(fns, budget, min_rounds, max_rounds, sync, clock)


# ------------------------------------------------------------------------------------------ memory
MEMORY_HOW = {
    "cpu": "peak of the bytes torch's CPU allocator handed out during the call and had not yet freed "
           "(torch.profiler with profile_memory=True; memory allocated before the call is not counted)",
    "cuda": "torch.cuda.max_memory_allocated during the call minus what was allocated before it",
}


def peak_memory(fn: Callable[[], object], device="cpu") -> int:
    """Peak bytes allocated during ``fn()`` on ``device``, over what was live before (see MEMORY_HOW).

    The result of ``fn`` is dropped before returning, but counted while it was alive.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each allocation event carries the running total of bytes allocated (and not freed) since the
    # profiler started: its maximum is the peak of the call.
    peak, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        if isinstance(fields, torch._C._profiler._ExtraFields_Allocation) and fields.device.type == "cpu":
            peak = max(peak, int(fields.total_allocated))
    return peak


# ------------------------------------------------------------------------------------------ tables
def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                     ["| " + " | ".join(cells) + " |" for cells in rows])


def mark(value: float, target: float, higher_is_better: bool = True, digits: int = 2) -> str:
    """``value`` with ✓ or ✗ against ``target``."""
    met = value >= target if higher_is_better else value <= target
    return f"{value:.{digits}f} {'✓' if met else '✗'}"


def mib(nbytes: float) -> str:
    """Mebibytes, to three significant digits below 10 (quick runs are tiny)."""
    value = nbytes / MIB
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"
