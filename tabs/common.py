"""What every tab shares: event settings and turning the library's errors into messages for the page."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import html
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from typing import Any, TypeVar

import anyio
import gradio as gr

from lab import catalog, deadline, sessions
from lab.config import Settings, generation_engine, request_seconds
from lab.errors import LabError
from lab.scheduler import SCHEDULER, Place
from lab.validate import BOUNDS

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

# Every event that runs a model joins Gradio's "gpu" group, which lets up to this many in at once to wait
# for their turn in the lab's model queue (lab.scheduler): one model call at a time, turns shared fairly
# between students. Events past this number wait in Gradio's own queue, first come first served.
MODEL_WAITING_ROOM = 64
GPU_EVENT: dict[str, Any] = {"concurrency_limit": MODEL_WAITING_ROOM, "concurrency_id": "gpu"}
# Cheap CPU work (tokenizing, drawing) runs for everyone at once.
CPU_EVENT: dict[str, Any] = {"concurrency_limit": None}


def _queue(gpu: bool, generates: bool) -> dict[str, Any]:
    """Where an event waits. A generation event (``generates``) goes to the serving engine when one is
    configured (``LAB_GENERATION_URL``): the engine batches requests, so these events wait in their own
    "engine" group, ``LAB_ENGINE_CONCURRENCY`` at a time, and never hold the in-process GPU queue."""
    engine = generation_engine() if generates else None
    if engine is not None:
        return {"concurrency_limit": engine.concurrency, "concurrency_id": "engine"}
    return GPU_EVENT if gpu or generates else CPU_EVENT


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


def warn(message: str) -> None:
    """A warning toast; escaped like every message, since it can name what a user typed or uploaded."""
    gr.Warning(html.escape(message, quote=False))


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

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as error:
                raise _message(error, fn.__name__) from None

        return coroutine_wrapper  # type: ignore[return-value]

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


# A long job by design (fitting topics, topic representations) gets this many times the request limit.
LONG_JOB = 5.0


def time_limited(fn: F, factor: float = 1.0) -> F:
    """Stop ``fn`` with :class:`lab.deadline.RequestTooLong` once it has run ``LAB_REQUEST_SECONDS``.

    The limit starts when the handler starts (time waiting in the queue is not counted) and is checked
    before every torch module runs (:mod:`lab.deadline`), so a model call unwinds at its next layer and the
    GPU queue moves on. A generator runs each step under the limit; closing it closes the wrapped one.
    """
    if inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn):
        return fn  # async handlers wait on jobs that have their own limits (fine-tune step caps)

    def limit() -> deadline.Deadline | None:
        seconds = request_seconds() * factor
        return deadline.Deadline.after(seconds) if seconds else None

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            until = limit()
            steps = fn(*args, **kwargs)
            try:
                while True:
                    # Gradio may resume a generator on another thread: the limit is set around each step.
                    with deadline.within(until):
                        try:
                            item = next(steps)
                        except StopIteration:
                            return
                    yield item
                    if until is not None:
                        until.check()
            finally:
                steps.close()

        return generator_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deadline.within(limit()):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def kind_of(fn: Callable[..., Any]) -> str:
    """The queue's name for an event: its tab and handler (``attention · predict``), or the API name."""
    module = fn.__module__.rsplit(".", 1)[-1]
    return f"{module} · {fn.__name__}" if fn.__module__.startswith("tabs.") else fn.__name__


def student() -> str:
    """The owner id of the request being handled (``lab.sessions.owner_of``), read from Gradio's context."""
    from gradio.context import LocalContext

    return sessions.owner_of(LocalContext.request.get(None))


def _progress_slot(fn: Callable[..., Any], add: bool) -> tuple[inspect.Signature, int | None, bool]:
    """Where the handler's ``gr.Progress`` comes in: ``(signature to publish, its index, added by us)``.

    Gradio hands a progress tracker to the positional parameter whose default is a ``gr.Progress``; a
    handler without one gets one appended, so every waiting request can show its place in the queue.
    """
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    for index, param in enumerate(params):
        if isinstance(param.default, gr.Progress):
            return signature, index, False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not add or len(positional) != len(params):  # not wanted, or no place for it (*args, keywords)
        return signature, None, False
    extra = inspect.Parameter(
        "queue_progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()
    )
    return signature.replace(parameters=[*params, extra]), len(params), True


def _place_reporter(
    args: tuple[Any, ...], slot: int | None, added: bool
) -> tuple[tuple[Any, ...], Callable[[Place], None] | None]:
    """The handler's own arguments (without a progress tracker we added) and a callback that shows a
    :class:`Place` in the event's progress bar (``None`` where no tracker came)."""
    progress = args[slot] if slot is not None and slot < len(args) else None
    if added:
        args = args[:slot]
    if not isinstance(progress, gr.Progress):
        return args, None
    first: dict[str, int] = {}  # turns ahead when it started waiting: the bar fills turn by turn

    def show(place: Place) -> None:
        start = first.setdefault("turns", place.ahead + 1)
        progress(1 - (place.ahead + 1) / start, desc=place.describe())

    return args, show


def queued(fn: F, kind: str | None = None, *, show_place: bool = True) -> F:
    """Run ``fn`` in its turn of the model queue (:mod:`lab.scheduler`), showing its place while it waits.

    The wait is asynchronous (no thread held, and a Stop or a closed page takes the request out of the
    queue); the handler then runs in a worker thread as Gradio would run it, holding the model until it
    returns (a generator: until it is exhausted or closed). The place and an estimate are shown through
    the event's progress bar (``show_place``; a ``gr.api`` endpoint cannot take one, so API clients
    only wait).
    """
    kind = kind or kind_of(fn)
    signature, slot, added = _progress_slot(fn, add=show_place)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        async def generator_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            args, on_wait = _place_reporter(args, slot, added)
            async with SCHEDULER.turn_async(student(), kind, on_wait):
                steps = fn(*args, **kwargs)
                try:
                    while True:
                        item = await anyio.to_thread.run_sync(next, steps, _DONE)
                        if item is _DONE:
                            return
                        yield item
                finally:
                    await _close(steps)

        generator_wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return generator_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, on_wait = _place_reporter(args, slot, added)
        async with SCHEDULER.turn_async(student(), kind, on_wait):
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


_DONE = object()  # what ``next`` returns for an exhausted generator, in :func:`queued`


async def _close(steps: Iterator[Any]) -> None:
    """Close a generator whose current step may still run in a worker thread (Stop cancels the await,
    not the thread): retry until that step has reached its ``yield``. Each step is bounded by the request
    time limit, and the model stays held until then, so nobody else's call overlaps it."""
    while True:
        try:
            steps.close()
            return
        except ValueError as error:
            if "already executing" not in str(error):
                raise
            await asyncio.sleep(0.05)


# -- batching across students -----------------------------------------------------------------------
# A handler registered with ``batched=True`` takes no whole turn: it prepares its input in its own
# thread, sends only the forward step to the model queue with :func:`in_batch`, where it joins other
# students' requests of the same kind, and presents the result in its own thread again.

_show_place: contextvars.ContextVar[Callable[[Place], None] | None] = contextvars.ContextVar(
    "lab_show_place", default=None
)


def batching(fn: F, *, show_place: bool = True) -> F:
    """Run ``fn``, a handler whose forward step goes through :func:`in_batch`, without a whole turn.

    It runs in a worker thread, as Gradio runs any plain handler; the event's progress bar (added to its
    signature as :func:`queued` does, when ``show_place``) is where :func:`in_batch` shows the place.
    """
    signature, slot, added = _progress_slot(fn, add=show_place)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, on_wait = _place_reporter(args, slot, added)
        token = _show_place.set(on_wait)
        try:
            return fn(*args, **kwargs)
        finally:
            _show_place.reset(token)

    wrapper.__signature__ = signature  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def in_batch(kind: str, key: Hashable, item: Any, batch_fn: Callable[[list[Any]], list[Any]]) -> Any:
    """Run ``item`` through ``batch_fn`` in the model queue, batched with other students' items of ``key``.

    ``kind`` names the request in the queue (a student's newer request of the same kind replaces a
    waiting one); ``key`` says which items may share a batch (the feature, the model and anything else
    that must match); ``batch_fn`` gets a list of items and returns one result (or exception) per item.
    The place is shown in the event's progress bar while the request waits (:func:`batching`).

    The request's time limit (:func:`time_limited`) does not count the wait: the batch runs under a limit
    of the same length from its start, and the handler's own limit resumes afterwards.
    """
    limit = deadline.current()

    def run(items: list[Any]) -> list[Any]:
        with deadline.within(deadline.Deadline.after(limit.seconds) if limit else None):
            return batch_fn(items)

    with deadline.paused():
        return SCHEDULER.run_batched(
            student(), kind, key=key, item=item, batch_fn=run, on_wait=_show_place.get()
        )


@contextlib.contextmanager
def model_turn(kind: str) -> Iterator[None]:
    """A whole turn in the model queue from inside a batched handler, for model work that cannot be
    batched (a model described or a gallery embedded on first use). The wait is not counted against the
    request's time limit; the work inside the block is."""
    ticket = SCHEDULER.join(student(), kind)
    try:
        with deadline.paused():
            SCHEDULER.wait(ticket, _show_place.get())
        yield
    finally:
        SCHEDULER.leave(ticket)


def slider(name: str, label: str | None = None, **options: Any) -> gr.Slider:
    """A slider whose range is the API's: ``BOUNDS[name]`` (lab.validate) sets minimum, maximum and step."""
    bound = BOUNDS[name]
    options.setdefault("value", bound.default)
    options.setdefault("step", bound.step)
    return gr.Slider(bound.low, bound.high, label=label or bound.label, **options)


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


class ImageUpload(gr.Image):
    """A ``gr.Image`` that hands the uploaded file's path over unopened, for :mod:`lab.images` to open.

    ``gr.Image`` opens every upload with PIL before the event runs, so a file that is not an image fails
    there with a bare "Error"; the lab's own opener explains what is wrong instead.
    """

    is_template = True  # drawn in the page as a plain gr.Image

    def preprocess(self, payload: Any) -> Any:
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        try:
            return super().preprocess(payload)
        except Exception as error:
            raise gr.Error(f"The image could not be read ({type(error).__name__}).") from None


def model_choices(ids: list[str]) -> list[tuple[str, str]]:
    """Dropdown choices for model ids: "Title · id" for catalog models, the bare id otherwise."""
    return [(f"{catalog.entry(i).title} · {i}" if catalog.is_known(i) else i, i) for i in ids]


def check_allowed(model_id: str, settings: Settings) -> None:
    """A classroom server loads only the lab's catalog models (free-form ids could fill its memory)."""
    if settings.classroom and not catalog.is_known(model_id):
        raise gr.Error(f"This classroom server only loads the lab's catalog models; {model_id} is not one.")


def _model_handler(
    fn: Callable[..., Any],
    gpu: bool,
    generates: bool,
    batched: bool,
    time_factor: float,
    *,
    show_place: bool = True,
) -> Callable[..., Any]:
    """The handler as it runs: under the request time limit for model work, and in its turn of the model
    queue (:func:`queued`, or :func:`batching` when ``batched``) unless a serving engine takes it (a
    generation event with an engine configured: the engine batches, so waiting for the in-process
    model's turn would only slow it down)."""
    if not (gpu or generates):
        return fn
    limited = time_limited(fn, time_factor)
    if generates and generation_engine() is not None:
        return limited
    return batching(limited, show_place=show_place) if batched else queued(limited, show_place=show_place)


def on(
    trigger: Callable[..., Any],
    fn: Callable[..., Any] | None,
    inputs: Any = None,
    outputs: Any = None,
    *,
    gpu: bool = False,
    generates: bool = False,
    batched: bool = False,
    time_factor: float = 1.0,
    **options: Any,
) -> Any:
    """Wire one widget event the lab's one way: errors shown in the lab's words, kept out of the API,
    on the GPU queue when ``gpu`` (one model call at a time, under the request time limit) or unqueued
    for cheap CPU work. With ``batched`` (and ``gpu``), the handler takes no whole turn in the model
    queue: it sends its forward step through :func:`in_batch`, batched with other students' requests.
    ``generates`` marks a generation event that a serving engine may answer (:func:`_queue`); without an
    engine it is a GPU event.

    ``trigger`` is the bound event (``button.click``); ``inputs`` may be a set of components, in which
    case the handler receives one ``{component: value}`` dict (read a form by component, not position).
    Returns Gradio's dependency, so ``.then(...)`` and ``cancels=[...]`` work as usual.
    """
    settings = {**PRIVATE, **_queue(gpu, generates), **options}
    if fn is not None:
        fn = _model_handler(fn, gpu, generates, batched, time_factor)
    return trigger(user_errors(fn) if fn is not None else None, inputs, outputs, **settings)


def api(
    fn: Callable[..., Any],
    *,
    gpu: bool = True,
    generates: bool = False,
    batched: bool = False,
    time_factor: float = 1.0,
    **options: Any,
) -> None:
    """Publish ``fn`` as the web API endpoint ``/<fn.__name__>``: its signature and docstring are the
    endpoint's, its errors are shown in the lab's words, and it waits in the GPU queue when ``gpu`` (with
    the request time limit, :func:`time_limited`), or batches its forward step through :func:`in_batch`
    when ``batched``. ``fn`` checks its own arguments (:mod:`lab.validate`): a web client can send any
    JSON, ``null`` and ``"ten"`` included. ``generates``: as in :func:`on`."""
    settings = {**_queue(gpu, generates), **options}
    handler = _model_handler(fn, gpu, generates, batched, time_factor, show_place=False)
    gr.api(user_errors(handler), api_name=fn.__name__, **settings)


@contextlib.contextmanager
def explained(title: str, explanation: str, *, open: bool = False) -> Iterator[gr.Accordion]:
    """A folded section that opens on its explanation (Markdown), then holds the widgets built inside."""
    with gr.Accordion(title, open=open) as section:
        gr.Markdown(explanation)
        yield section
