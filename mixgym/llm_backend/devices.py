"""Where and in what precision `HFBackend` trains: device, autocast, AdamW kernel, compile.

Each choice is a small function of the setting and of what the machine has, so that the
choices a GPU run makes are tested on machines without one:

- device ``"auto"``: the process's CUDA device when CUDA is available (under torchrun,
  ``cuda:LOCAL_RANK``), else the CPU.
- precision ``"auto"``: bf16 autocast on a CUDA device that supports bf16, fp32 elsewhere.
  Autocast keeps the parameters, their gradients and the optimizer state in fp32 (the
  master weights) and runs matrix products in bf16; bf16 keeps fp32's exponent range, so
  no loss scaling is needed (fp16 would need a `GradScaler`, and is not offered).
  ``"bf16"`` asks for it anywhere (CPU autocast supports bf16 too), ``"fp32"`` turns it off.
- AdamW: the fused kernel (one kernel for all parameters) on CUDA unless told otherwise;
  torch's default (for-each) on CPU, where the fused kernel is optional.
- compile: off by default; True is `torch.compile` with its default backend, a string
  names the backend (``"aot_eager"`` runs the compiled autograd path without a C++
  compiler).
"""

from __future__ import annotations

import contextlib
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(requested: str, cuda_available: bool, local_rank: int = 0, device_count: int | None = None) -> str:
    """The torch device a `HFConfig.device` setting means on this machine and rank; a
    ``"cuda:N"`` beyond `device_count` (the machine's CUDA devices, when given) is refused."""
    if requested == "auto":
        return f"cuda:{local_rank}" if cuda_available else "cpu"
    if requested == "cuda":
        if not cuda_available:
            raise ValueError("device='cuda' but CUDA is not available here; use device='auto' or 'cpu'")
        return f"cuda:{local_rank}"
    if requested == "cpu":
        return requested
    if requested.startswith("cuda:") and requested[5:].isdigit():
        count = device_count if cuda_available else 0
        if count is not None and int(requested[5:]) >= count:
            raise ValueError(
                f"device={requested!r} but this machine has {count} CUDA device(s)"
                + (f" (cuda:0 .. cuda:{count - 1})" if count else "")
                + "; use device='auto', 'cpu' or one that exists"
            )
        return requested
    raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")


def autocast_dtype(precision: str, device_type: str, bf16_supported: bool) -> str | None:
    """The autocast dtype ("bfloat16") a `HFConfig.precision` setting gives, or None (fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if device_type == "cuda" and not bf16_supported:
            raise ValueError("precision='bf16' but this CUDA device does not support bf16; use precision='fp32'")
        return "bfloat16"
    if precision == "auto" and device_type == "cuda" and bf16_supported:
        return "bfloat16"
    return None


def adamw_options(device_type: str, fused: bool | None) -> dict[str, Any]:
    """Keyword arguments of `torch.optim.AdamW` for `HFConfig.fused_adamw` on a device."""
    use_fused = device_type == "cuda" if fused is None else fused
    return {"fused": True} if use_fused else {}


def autocast(torch: Any, device_type: str, dtype: str | None) -> Any:
    """The autocast context of a forward pass (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def compiled(torch: Any, module: Any, setting: bool | str) -> Any:
    """`module` compiled per `HFConfig.compile` (itself when off)."""
    if setting is False:
        return module
    return torch.compile(module) if setting is True else torch.compile(module, backend=setting)
