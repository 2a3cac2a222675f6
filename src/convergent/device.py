"""Choosing where array work runs, without paying for ``import torch`` when it cannot matter.

Importing torch costs seconds per job; a pipeline of hundreds of short analysis jobs on a
machine without an NVIDIA driver should not pay it just to learn there is no GPU.
"""

from __future__ import annotations

import os


def cuda_possible() -> bool:
    """False when no NVIDIA driver is present, so CUDA cannot be available."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def resolve_device(preference: str = "auto") -> str:
    """``"cuda"`` or ``"cpu"``; ``auto`` picks CUDA when present, ``cuda`` without a GPU is an error."""
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda; got {preference!r}")
    if preference == "cpu" or (preference == "auto" and not cuda_possible()):
        if preference == "cuda":
            raise RuntimeError("device 'cuda' was requested but no NVIDIA driver is present")
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if preference == "cuda":
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return "cpu"
