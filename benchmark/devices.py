"""Devices and numeric precision, one rule for every command.

``resolve_device``: the device a command runs on (``cuda`` when there is one, else ``cpu``; an explicit device
is checked so that a typo or a missing GPU is one line, not a traceback). ``precision`` applies the project's
precision vocabulary (``benchmark.settings.PRECISIONS``) around a block of network work:

    fp32  true fp32 matmuls and convolutions (TF32 switched off)
    tf32  fp32 storage, TF32 tensor-core matmuls/convolutions on CUDA (PyTorch's and the DiT reference's default)
    bf16  bf16 autocast for the network, fp32 weights; TF32 for whatever runs outside autocast

The TF32 switches are process-global in PyTorch; ``precision`` restores them on exit.
"""
from __future__ import annotations

import contextlib
import platform
from typing import Iterator, Optional

import torch

from benchmark.errors import UserError


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: torch.device | str) -> str:
    """What a measured time ran on: the GPU's name, or the CPU and its torch threads."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def resolve_device(spec: Optional[str | torch.device] = None) -> torch.device:
    """``spec`` (None = ``default_device()``) as a usable torch.device, or a one-line UserError."""
    if spec is None or spec == "":
        return torch.device(default_device())
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {spec!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec} asks for a GPU but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: this machine has {torch.cuda.device_count()} GPU(s) "
                            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif device.type not in ("cpu", "mps"):
        raise UserError(f"--device {spec!r} is not supported; use cpu, cuda or cuda:N")
    return device


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions on or off inside the block (restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def precision(name: str, device: torch.device | str) -> Iterator[None]:
    """Run the block in precision ``name`` (fp32, tf32 or bf16) on ``device``."""
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()
    with tf32(name != "fp32"), autocast:
        yield
