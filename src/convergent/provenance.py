"""The environment that made an output: recorded in it, so differing numbers can be traced.

Results move with the software and the hardware (BLAS kernels, torch versions, GPU or CPU), so
every model JSON and activation file records :func:`environment`. Torch-free: package versions
come from the installed distributions' metadata, and torch's own state (determinism, the GPU) is
read only where torch has been imported already.

>>> env = environment()
>>> sorted(env)[:3], env["packages"]["numpy"] is not None
(['cpu', 'device', 'machine'], True)
"""

from __future__ import annotations

import json
import platform
import sys
from functools import lru_cache
from importlib import metadata

PACKAGES = ("convergent", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "h5py", "timm", "transformers",
            "POT")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: object = None) -> dict:
    """Python, platform, CPU, the versions of the packages results depend on, and where torch is
    loaded, its determinism settings and the GPU (``device``: the device the job ran on)."""
    from convergent import __version__

    packages = {name: _version(name) for name in PACKAGES}
    packages["convergent"] = __version__
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "packages": {k: v for k, v in packages.items() if v is not None},
        "device": None if device is None else str(device),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = {
            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "threads": int(torch.get_num_threads()),
            "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        }
    return env


def environment_json(device: object = None) -> str:
    """:func:`environment` as JSON text, for an HDF5 attribute."""
    return json.dumps(environment(device), sort_keys=True)
