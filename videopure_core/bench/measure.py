"""Measuring a stage: wall-clock seconds and peak memory, on CPU or CUDA, plus the device's matmul rate.

Peak memory means different things per device, and the tables say which:
- CUDA: `torch.cuda.max_memory_allocated` (tensors only, not the caching allocator's reserve), reset per stage.
- CPU: the process's peak resident set size, `VmHWM` in /proc/self/status (tracemalloc does not see torch's
  allocations). Linux resets it when "5" is written to /proc/self/clear_refs, so each stage gets its own peak; where
  that is not allowed the peak is the process's since start (`resettable` says which). The RSS includes the models,
  the Python runtime and memory the allocator keeps, so the tables also give `peak - RSS at the stage's start`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from dataclasses import dataclass

import torch

from ..networks import synchronize
from ..pipeline import Hooks

_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int | None:
    try:
        with open(_STATUS) as f:
            match = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def rss_bytes() -> int:
    """Current resident set size of this process (0 where /proc is missing)."""
    return (_status_kib("VmRSS") or 0) * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since start or since the last `reset_peak_rss` (VmHWM; ru_maxrss off Linux)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class StageStats:
    """One stage: seconds (summed over calls), peak memory and the memory in use when it started, in bytes."""

    seconds: float = 0.0
    peak_bytes: int = 0
    start_bytes: int = 0
    calls: int = 0

    @property
    def extra_bytes(self) -> int:
        """What the stage added on top of what was already there: its working set."""
        return max(0, self.peak_bytes - self.start_bytes)


class StageMeter(Hooks):
    """Pipeline hooks that time stages and record their peak memory on one device.

        meter = StageMeter("cpu")
        purifier.purify(video, meter)
        meter.stages["encode"].seconds, meter.stages["encode"].peak_bytes

    CUDA work is synchronised at both ends of a stage, so the seconds include the kernels it queued.
    """

    def __init__(self, device: torch.device | str):
        super().__init__(None, torch.device(device))
        self.stages: dict[str, StageStats] = {}
        self.resettable = True

    def _memory(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return rss_bytes()

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.resettable = reset_peak_rss() and self.resettable

    def _peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return peak_rss_bytes()

    @contextlib.contextmanager
    def stage(self, name: str):
        synchronize(self.device)
        self._reset_peak()
        start_bytes = self._memory()
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            seconds = time.perf_counter() - start
            peak = self._peak()
            stats = self.stages.setdefault(name, StageStats(start_bytes=start_bytes))
            stats.seconds += seconds
            stats.calls += 1
            self.seconds[name] = stats.seconds
            if peak > stats.peak_bytes:
                stats.peak_bytes, stats.start_bytes = peak, start_bytes

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages.values())

    @property
    def peak_bytes(self) -> int:
        return max((s.peak_bytes for s in self.stages.values()), default=0)


def matmul_rate(device: torch.device | str, dtype: torch.dtype, size: int | None = None, reps: int = 3) -> float:
    """The device's measured dense matmul rate in FLOP/s for `dtype` (the reference for the FLOP floors).

    Square matmuls of `size` (CUDA 8192, CPU 2048 by default), best of `reps` after a warm-up.
    """
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 / AMX), i.e. CPU autocast can pay off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def describe_device(device: torch.device | str) -> str:
    """A one-line description: GPU name and memory, or CPU model, cores and threads torch uses."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
        model = match.group(1).strip() if match else model
    except OSError:
        pass
    bf16 = ", native bf16" if cpu_has_native_bf16() else ""
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{bf16}, torch {torch.__version__}"


def other_load() -> str:
    """Processes other than this one using CPU right now (e.g. a training run), as `ps` reports them; '' if none."""
    import subprocess

    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    busy = []
    for line in out.stdout.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) < 3 or int(parts[0]) == os.getpid() or parts[2].startswith("ps "):
            continue
        if float(parts[1]) >= 20.0:
            busy.append(f"{parts[2][:80]} ({parts[1]}% CPU)")
    return "; ".join(busy[:3])
