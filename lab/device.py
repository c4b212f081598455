"""The one place that decides where models run and in which precision.

Policy: CUDA (bfloat16 where the GPU supports it, else float16), then Apple MPS, then CPU float32.
``LAB_DEVICE`` overrides the device (``cpu``, ``cuda``, ``cuda:1``, ``mps``). On a ZeroGPU Space the
functions that touch the GPU are wrapped with ``spaces.GPU`` by :func:`gpu_function`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Placement:
    """Where a model lives: a torch device string and the dtype its weights use there."""

    device: str
    dtype: torch.dtype

    @property
    def kind(self) -> str:
        """``cuda``, ``mps`` or ``cpu``: the memory budget this placement counts against."""
        return self.device.split(":")[0]


def _dtype_for(device: str) -> torch.dtype:
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        major, _ = torch.cuda.get_device_capability(index)
        return torch.bfloat16 if major >= 8 else torch.float16  # bf16 needs Ampere or newer
    # MPS keeps float32: several ops lack half-precision kernels on older macOS releases.
    return torch.float32


def select(device: str | None = None) -> Placement:
    """Pick the device and dtype for a model.

    Args:
        device: an explicit device; else ``LAB_DEVICE``; else the best available.
    """
    import torch  # imported here, not at module level: importing the app must stay fast

    choice = device or os.environ.get("LAB_DEVICE", "").strip() or None
    if choice is None:
        if torch.cuda.is_available():
            choice = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            choice = "mps"
        else:
            choice = "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"LAB_DEVICE={choice} but this machine has no CUDA GPU that torch can use")
    return Placement(choice, _dtype_for(choice))


def memory_report() -> list[dict[str, Any]]:
    """Used and total memory of the CPU and each CUDA device, in bytes."""
    import psutil
    import torch

    vm = psutil.virtual_memory()
    rows = [{"device": "cpu", "used": vm.total - vm.available, "total": vm.total}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            rows.append({"device": f"cuda:{index}", "used": total - free, "total": total})
    return rows


def total_memory(kind: str) -> int:
    """Total bytes of memory behind a device kind (``cpu``, ``cuda``, ``mps``)."""
    import psutil
    import torch

    if kind == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory
    return psutil.virtual_memory().total  # MPS shares system memory


def on_zero_gpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the ``spaces`` package is there and says so)."""
    return bool(os.environ.get("SPACES_ZERO_GPU")) and importlib.util.find_spec("spaces") is not None


def gpu_function(duration: int = 60) -> Callable[[F], F]:
    """Mark a function that runs a model forward pass.

    On ZeroGPU it is wrapped with ``spaces.GPU(duration=...)``, which attaches a GPU for the call;
    everywhere else the function is returned unchanged.
    """

    def decorate(fn: F) -> F:
        if not on_zero_gpu():
            return fn
        import spaces

        return functools.wraps(fn)(spaces.GPU(duration=duration)(fn))

    return decorate
