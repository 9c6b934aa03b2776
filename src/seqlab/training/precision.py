"""Mixed precision: which autocast dtype `train.precision` means on the device at hand.

`auto` takes bf16 autocast wherever the device computes bf16 in hardware (CUDA GPUs of compute capability
≥ 8; CPUs with AVX-512 BF16 or AMX, as oneDNN reports them) and plain fp32 elsewhere, so one config runs
at its best on any machine. `bf16` insists on autocast and is refused where bf16 would be emulated (many
times slower than fp32); `fp32` never autocasts. Losses are taken in fp32 and weights stay fp32 either way.

On the CPU, bf16 matmuls and RNNs run as oneDNN primitives, built per input shape and kept in oneDNN's
primitive cache (1,024 by default). Batches by token count give hundreds of distinct shapes, and the cached
primitives alone grew the recurrent Multi30k rungs to 2.4–2.8 GiB; `ONEDNN_CACHE_CAPACITY` primitives keep
them at the fp32 footprint at the same speed. oneDNN reads the capacity once, when it builds its first
primitive, so it is set on import (before any training op); an ONEDNN_PRIMITIVE_CACHE_CAPACITY already in
the environment wins.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from seqlab.config import ConfigError

ONEDNN_CACHE_CAPACITY = 8
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


def has_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware (CUDA: compute capability ≥ 8; CPU: AVX-512 BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def cpu_has_bf16() -> bool:
    """oneDNN's probe of the CPU: True on AVX-512 BF16 or AMX, False on AVX2-only or older x86-64 CPUs."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_summary() -> str:
    """The CPU model and the flags that decide the fast paths (as lscpu shows them), for benchmark output."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    shown = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if flag in flags]
    return f"{model}; flags: {' '.join(shown) or 'none of avx2/avx512/amx'}; oneDNN bf16: {cpu_has_bf16()}"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run actually uses, 'bf16' or 'fp32', for `train.precision` on `device`."""
    if precision == "bf16" and not has_bf16(device):
        raise ConfigError(
            f"train.precision = bf16, but {device} has no bf16 hardware, where bf16 runs many times slower "
            "than fp32; set train.precision to auto (bf16 where the hardware has it) or fp32."
        )
    if precision == "bf16" or (precision == "auto" and has_bf16(device)):
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that train.precision means on this device; None = plain fp32."""
    return torch.bfloat16 if resolve_precision(precision, device) == "bf16" else None
