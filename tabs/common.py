"""What every tab shares: event settings and turning the library's errors into messages for the page."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import gradio as gr

from lab import catalog
from lab.cache import OutOfMemory
from lab.catalog import ModelUnavailable
from lab.config import Settings
from lab.tokens import TextTooLong

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Every event that runs a model on the GPU waits in this one queue, one at a time.
GPU_EVENT: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": "gpu"}
# Cheap CPU work (tokenizing, drawing) runs for everyone at once.
CPU_EVENT: dict[str, Any] = {"concurrency_limit": None}

USER_ERRORS = (ModelUnavailable, TextTooLong, OutOfMemory, ValueError)


def _message(error: Exception, where: str) -> gr.Error:
    """The page's message for an error: the library's own words, or "internal error" and a logged trace."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, USER_ERRORS):
        return gr.Error(str(error), duration=None)
    log.error("unexpected error in %s", where, exc_info=error)
    return gr.Error(f"Internal error ({type(error).__name__}); the server log has the details.")


def user_errors(fn: F) -> F:
    """Show the library's expected errors as a clear message in the page (``gr.Error``), not a traceback.

    Works for plain functions, generators and async generators (a plain wrapper would hide a generator
    from Gradio, which would then take the generator object for an output value). Closing the wrapper, as
    Gradio does on Stop, closes the wrapped generator too. Anything unexpected is logged with its
    traceback and reported as an internal error; other users' sessions are untouched either way.
    """
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as error:
                raise _message(error, fn.__name__) from None

        return async_wrapper  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise _message(error, fn.__name__) from None

        return generator_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise _message(error, fn.__name__) from None

    return wrapper  # type: ignore[return-value]


def model_choices(ids: list[str]) -> list[tuple[str, str]]:
    """Dropdown choices for model ids: "Title · id" for catalog models, the bare id otherwise."""
    return [(f"{catalog.entry(i).title} · {i}" if catalog.is_known(i) else i, i) for i in ids]


def check_allowed(model_id: str, settings: Settings) -> None:
    """A classroom server loads only the lab's catalog models (free-form ids could fill its memory)."""
    if settings.classroom and not catalog.is_known(model_id):
        raise gr.Error(f"This classroom server only loads the lab's catalog models; {model_id} is not one.")
