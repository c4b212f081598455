"""A time limit per request: a model call that runs past it stops with a message and frees the queue.

A forward pass cannot be interrupted from outside, but a model is a tree of modules called one after the
other. One global forward pre-hook (``torch.nn.modules.module.register_module_forward_pre_hook``) checks,
before every module runs, whether the calling thread's request is past its deadline, and raises
:class:`RequestTooLong` if so: the model call unwinds at the next layer, the lease returns the model and the
GPU queue moves on. Generation threads (:class:`lab.streaming.TokenStream`) carry the deadline of the thread
that started them. What is not covered: work outside torch modules (tokenizing, UMAP, HDBSCAN), which the
lab bounds by its input caps instead (:mod:`lab.validate`), and one single huge operation, which ends
before the next module is entered. On a ZeroGPU Space the call runs in another process, and the Space's
own ``duration`` is the limit.

::

    with deadline.time_limit(120):
        attention.next_token("The capital of France is")
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lab.errors import LabError

_local = threading.local()
_hook_lock = threading.Lock()
_hook: Any = None


class RequestTooLong(LabError):
    """The request ran past its time limit and was stopped."""


@dataclass
class Deadline:
    """When a request must have finished (``time.monotonic()`` seconds), and its limit in seconds.

    One object per request, shared by the threads that work on it; :func:`paused` moves its end."""

    end: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    @property
    def passed(self) -> bool:
        return time.monotonic() > self.end

    def error(self) -> RequestTooLong:
        return RequestTooLong(
            f"This request took longer than {self.seconds:g} s and was stopped, so that the next one in "
            "the queue can run. Try a shorter text, fewer tokens or smaller settings."
        )

    def check(self) -> None:
        """Raise :class:`RequestTooLong` if the deadline has passed."""
        if self.passed:
            raise self.error()


def current() -> Deadline | None:
    """The calling thread's deadline, if it runs a request with a time limit."""
    return getattr(_local, "deadline", None)


def check() -> None:
    """Raise :class:`RequestTooLong` if the calling thread's request is past its deadline."""
    found = current()
    if found is not None:
        found.check()


@contextlib.contextmanager
def within(limit: Deadline | None) -> Iterator[None]:
    """Run the block under ``limit`` (None: no limit) in this thread; the previous one is restored after."""
    if limit is not None:
        _install_hook()
    previous = current()
    _local.deadline = limit
    try:
        yield
    finally:
        _local.deadline = previous


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Do not count the block against the calling thread's deadline (a model loading once for everyone).

    Loading a model is the cache's work, not the request's: a first request that loads a large model on a
    busy machine must not be stopped for the load, and the model stays loaded for the next one.
    """
    found = current()
    if found is None:
        yield
        return
    started = time.monotonic()
    _local.deadline = None
    try:
        yield
    finally:
        found.end += time.monotonic() - started
        _local.deadline = found


def time_limit(seconds: float | None) -> contextlib.AbstractContextManager[None]:
    """Run the block with a limit of ``seconds`` (None or 0: none), starting now."""
    return within(Deadline.after(seconds) if seconds else None)


def _before_module(module: Any, inputs: Any) -> None:
    found = getattr(_local, "deadline", None)
    if found is not None and found.passed:
        raise found.error()


def _install_hook() -> None:
    """Install the one global forward pre-hook (imports torch on first use only)."""
    global _hook
    if _hook is not None:
        return
    with _hook_lock:
        if _hook is None:
            # The package first, never a submodule: a thread that imports ``torch.nn.modules.module`` holds
            # that module's import lock while it waits for ``torch``, and a page-load event importing
            # ``torch`` at the same moment then gets a half-initialised module (a cross-thread cycle).
            import torch

            _hook = torch.nn.modules.module.register_module_forward_pre_hook(_before_module)
