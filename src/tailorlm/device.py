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
