"""Where and in what precision the encoder runs: the device `auto` means, whether it has
native bf16, and which precision `auto` takes with the torch backend."""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` (or None) is the first CUDA GPU where there is one, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu")
    return device


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` runs bf16 matrix work natively.

    CPUs: AVX512-BF16 or AMX (elsewhere torch emulates bf16, slower than fp32). CUDA:
    compute capability 8.0 (Ampere) or newer; `torch.cuda.is_bf16_supported()` also
    says yes on older GPUs that only emulate it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    return any(getattr(cpu, name, lambda: False)() for name in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def auto_precision(device: str | torch.device) -> str:
    """What `auto` runs on `device` with the torch backend: bf16 where it is native; else
    fp16 on a GPU and fp32 on a CPU. (int8 runs on the OpenVINO backend, which
    `load_classifier` prefers on CPUs: model/runtime/backends.py.)"""
    device = torch.device(device)
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def resolve_precision(requested: str | None, device: str | torch.device = "cpu") -> str:
    """The precision to run on `device`: `auto` (or None) as `auto_precision` decides; an
    explicit one is checked against the device."""
    device = torch.device(device)
    if requested in (None, "auto"):
        return auto_precision(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {PRECISIONS}, got {requested!r}")
    if requested == "int8" and device.type != "cpu":
        raise ValueError(f"int8 (the OpenVINO backend) runs on the CPU only, not {device}; "
                         "add --device cpu (device='cpu')")
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("fp16 runs on CUDA GPUs only; on a CPU use bf16 or fp32")
    return requested
