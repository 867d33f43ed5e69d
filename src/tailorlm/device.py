"""Device and precision: the same code on CPU and CUDA."""
from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is visible. Fix: train.device=auto or cpu")
    return name


def fast_bf16(device: str) -> bool:
    """Does this device run bf16 matmuls faster than fp32? CUDA from Ampere on; a CPU only with
    AVX512-BF16 or AMX (without them oneDNN emulates bf16 and a matmul runs ~50x slower)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def autocast(device: str, precision: str):
    """bf16 autocast on CPU too: this CPU's AVX512-BF16 runs bf16 matmuls ~2.5x faster than fp32,
    while master weights and optimizer state stay fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def proc_status(*keys: str) -> dict[str, int]:
    """Bytes of /proc/self/status's entries `keys` (VmRSS: resident now, VmHWM: its peak); {} off Linux."""
    try:
        with open("/proc/self/status") as fh:
            return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in fh if ":" in line)
                    if k in keys}
    except (OSError, ValueError):
        return {}


def process_peak_rss() -> int:
    """The whole process's peak resident memory so far (ru_maxrss), in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMeter:
    """Peak memory over a window, the one meter (compare's PeakMemory callback, the benchmarks): start()
    resets the CPU peak (VmHWM, by writing 5 to /proc/self/clear_refs, Linux >= 4.0) and on CUDA
    torch's peak; peak() reads them. Where the reset is refused, `reset` is False and the peak is
    the process's own, loading included."""

    def __init__(self, device: str):
        self.device, self.start_rss, self.reset = device, None, False

    def start(self) -> None:
        self.start_rss = proc_status("VmRSS").get("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")            # resets VmHWM to the current RSS
            self.reset = True
        except OSError:
            self.reset = False
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        """Bytes: rss_at_start, peak_rss (VmHWM; ru_maxrss off Linux), process_maxrss, and on CUDA
        peak_cuda_alloc / peak_cuda_reserved (torch.cuda.max_memory_allocated / _reserved)."""
        process = process_peak_rss()
        out = {"rss_at_start": self.start_rss, "peak_rss": proc_status("VmHWM").get("VmHWM", process),
               "process_maxrss": process}
        if self.device == "cuda":
            torch.cuda.synchronize()
            out["peak_cuda_alloc"] = torch.cuda.max_memory_allocated()
            out["peak_cuda_reserved"] = torch.cuda.max_memory_reserved()
        return out


def memory_mb(device: str) -> dict:
    """Memory now, for each step's record (MiB): the process's resident set and its peak so far (Linux
    /proc/self/status VmRSS, VmHWM; absent elsewhere), and on CUDA the tensors allocated and their peak
    (torch.cuda.memory_allocated / max_memory_allocated). Reading them costs microseconds."""
    vm = proc_status("VmRSS", "VmHWM")
    out = {"rss_mb": vm["VmRSS"] / 2**20, "peak_rss_mb": vm["VmHWM"] / 2**20} if len(vm) == 2 else {}
    if device == "cuda":
        out.update(cuda_mem_mb=torch.cuda.memory_allocated() / 2**20,
                   cuda_peak_mem_mb=torch.cuda.max_memory_allocated() / 2**20)
    return out
