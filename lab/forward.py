"""One wrapper for every function that runs a model: the *forward* step of prepare → forward → present.

Each feature writes only its forward step and decorates it with :func:`forward`, which applies, in order:

- the ZeroGPU decorator (``spaces.GPU(duration=...)``) on a ZeroGPU Space, so the call gets a GPU;
- :func:`lab.cache.oom_guard`, so a CUDA out-of-memory becomes :class:`lab.cache.OutOfMemory` with a
  message, and the cache frees what it can;
- ``torch.inference_mode()``, so no autograd graph is kept.

Generator functions (streaming) are wrapped as generators, without the inference mode (its state is
per thread, and Gradio may resume a generator on another thread; :mod:`lab.streaming` sets it in the
generating thread). Models are placed on the lab's device by the
loaders in :mod:`lab.models`; the inputs follow the model (``inputs.to(model.device)``) in the forward step.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from lab import device
from lab.cache import oom_guard

F = TypeVar("F", bound=Callable[..., Any])


def forward(what: str | Callable[..., str], *, duration: int = 60, grad: bool = False) -> Callable[[F], F]:
    """Decorate a model's forward step.

    Args:
        what: what the call does, for the out-of-memory message ("embedding images"); or a function of
            the call's arguments that says it ("BLIP-2 was writing a caption").
        duration: seconds of GPU a ZeroGPU Space reserves for one call.
        grad: keep autograd on (training); inference mode otherwise.
    """

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
                # No grad mode here: it is thread-local and a generator may resume on another thread.
                # Streams generate in their own thread, which sets inference mode (lab.streaming).
                with oom_guard(_say(what, args, kwargs)):
                    yield from fn(*args, **kwargs)

            generator.lab_forward = what  # type: ignore[attr-defined]
            return device.gpu_function(duration)(generator)  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with oom_guard(_say(what, args, kwargs)), _grad_mode(grad):
                return fn(*args, **kwargs)

        call.lab_forward = what  # type: ignore[attr-defined]  # tests check every forward step is wrapped
        return device.gpu_function(duration)(call)  # type: ignore[return-value]

    return decorate


def _say(what: str | Callable[..., str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return what if isinstance(what, str) else what(*args, **kwargs)


def _grad_mode(grad: bool) -> Any:
    import torch

    return torch.enable_grad() if grad else torch.inference_mode()
