"""What every tab shares: event settings and turning the library's errors into messages for the page."""

from __future__ import annotations

import functools
import html
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import gradio as gr

from lab import catalog
from lab.config import Settings
from lab.errors import LabError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Every event that runs a model on the GPU waits in this one queue, one at a time.
GPU_EVENT: dict[str, Any] = {"concurrency_limit": 1, "concurrency_id": "gpu"}
# Cheap CPU work (tokenizing, drawing) runs for everyone at once.
CPU_EVENT: dict[str, Any] = {"concurrency_limit": None}

# Handlers that are wired to widgets stay out of the public API (`gr.api` endpoints are the API).
PRIVATE: dict[str, Any] = {"api_visibility": "private"}


def _message(error: Exception, where: str) -> gr.Error:
    """The page's message for an error: the lab's own words (a :class:`LabError`), or "internal error".

    Anything that is not a ``LabError`` (a numpy or pandas ``ValueError`` included) is a defect or an
    unforeseen case: the page says "internal error" and the server log keeps the trace.
    """
    # Messages can echo what a user typed or linked (a model id, a file name): the toast renders HTML,
    # so every message is escaped. Toasts close by themselves (Gradio's 10 s) instead of piling up.
    if isinstance(error, gr.Error):
        return gr.Error(html.escape(error.message, quote=False), duration=error.duration, title=error.title)
    if isinstance(error, LabError):
        return gr.Error(html.escape(str(error), quote=False))
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


class Table(gr.Dataframe):
    """A read-only ``gr.Dataframe`` that builds without importing pandas' Styler.

    Gradio turns every Dataframe's initial value into table data at build time, and that path imports
    ``pandas.io.formats.style`` (and through it ``matplotlib.pyplot``): most of a second added to the
    app's start for tables that are empty until a user fits something. An empty table is made here;
    every other value goes through Gradio's own ``postprocess``.

    ``is_template`` tells Gradio to draw it with the Dataframe's own frontend (as its ``ClearButton`` does
    for ``Button``). Without it Gradio takes any subclass for a custom component, asks the server for a
    ``table`` frontend that does not exist (404), and the page stays under its loading overlay for good.
    """

    is_template = True

    def postprocess(self, value: Any) -> Any:
        if value is None:
            from gradio.components.dataframe import DataframeData

            return DataframeData(headers=list(self.headers or []), data=[], metadata=None)
        return super().postprocess(value)


def model_choices(ids: list[str]) -> list[tuple[str, str]]:
    """Dropdown choices for model ids: "Title · id" for catalog models, the bare id otherwise."""
    return [(f"{catalog.entry(i).title} · {i}" if catalog.is_known(i) else i, i) for i in ids]


def check_allowed(model_id: str, settings: Settings) -> None:
    """A classroom server loads only the lab's catalog models (free-form ids could fill its memory)."""
    if settings.classroom and not catalog.is_known(model_id):
        raise gr.Error(f"This classroom server only loads the lab's catalog models; {model_id} is not one.")


def on(
    trigger: Callable[..., Any],
    fn: Callable[..., Any] | None,
    inputs: Any = None,
    outputs: Any = None,
    *,
    gpu: bool = False,
    **options: Any,
) -> Any:
    """Wire one widget event the lab's one way: errors shown in the lab's words, kept out of the API,
    on the GPU queue when ``gpu`` (one model call at a time) or unqueued for cheap CPU work.

    ``trigger`` is the bound event (``button.click``); ``inputs`` may be a set of components, in which
    case the handler receives one ``{component: value}`` dict (read a form by component, not position).
    Returns Gradio's dependency, so ``.then(...)`` and ``cancels=[...]`` work as usual.
    """
    settings = {**PRIVATE, **(GPU_EVENT if gpu else CPU_EVENT), **options}
    return trigger(user_errors(fn) if fn is not None else None, inputs, outputs, **settings)


def api(fn: Callable[..., Any], *, gpu: bool = True, **options: Any) -> None:
    """Publish ``fn`` as the web API endpoint ``/<fn.__name__>``: its signature and docstring are the
    endpoint's, its errors are shown in the lab's words, and it waits in the GPU queue when ``gpu``."""
    settings = {**(GPU_EVENT if gpu else CPU_EVENT), **options}
    gr.api(user_errors(fn), api_name=fn.__name__, **settings)
