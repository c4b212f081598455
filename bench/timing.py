"""The bench's one clock: how long a call takes, once or as the median of several runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def _synchronize() -> None:
    """Wait for queued CUDA work, so that a GPU call is timed to its end and not to its launch."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(call: Callable[[], T], *, cuda_sync: bool = False) -> tuple[float, T]:
    """Seconds one call takes, and what it returned.

    Args:
        call: the work to time, with no arguments (wrap it in a lambda).
        cuda_sync: wait for the GPU before stopping the clock.
    """
    started = time.perf_counter()
    result = call()
    if cuda_sync:
        _synchronize()
    return time.perf_counter() - started, result


def median_ms(call: Callable[[], object], repeats: int, *, cuda_sync: bool = False) -> float:
    """Median milliseconds of ``repeats`` calls (at least one); the caller warms up first if it needs to."""
    return statistics.median(timed(call, cuda_sync=cuda_sync)[0] for _ in range(max(1, repeats))) * 1000
