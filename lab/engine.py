"""Generation on an OpenAI-compatible serving engine: vLLM on GPUs, llama.cpp's server on CPUs.

In process, the app runs one model call at a time (the ``gpu`` queue): right for a reader, a wall for a
class. A serving engine batches every open request into each forward step (continuous batching), so 16
students' answers take little longer than one. With ``LAB_GENERATION_URL`` set (:func:`lab.config.
generation_engine`), the generation features send their requests here through the ``openai`` client; the
features that need the model's insides (attention weights, logit lens, embeddings, KV-cache timing) stay in
process, as they must. Without it nothing here runs and ``openai`` is never imported.

Streams yield text *pieces*; :func:`growing` turns them into the growing text the tabs show. Closing a
stream closes its HTTP response, and the engine then drops the request (llama.cpp and vLLM both abort a
request whose client has gone), so a page's Stop frees the engine's slot at once. Every failure is a
:class:`lab.errors.LabError` that names the engine's URL::

    from lab import engine
    for text in engine.growing(engine.chat_stream("HuggingFaceTB/SmolLM2-135M-Instruct",
                                                  [{"role": "user", "content": "Hi"}], max_tokens=20)):
        print(text)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any

from lab.config import EngineSettings, generation_engine, request_seconds
from lab.errors import LabError

_FALLBACKS = itertools.count(1)


class EngineError(LabError):
    """The serving engine could not answer: down, too slow, stopped mid-answer, or refused the request."""


def settings() -> EngineSettings | None:
    return generation_engine()


def configured() -> bool:
    """True when generation may leave the process (``LAB_GENERATION_URL`` is set)."""
    return settings() is not None


def served_name(model_id: str) -> str | None:
    """The engine's name for a lab model id (or ``adapter:<run>``), or None when it runs in process."""
    engine = settings()
    if engine is None:
        return None
    if not engine.models:
        return None if model_id.startswith("adapter:") else model_id
    return engine.models.get(model_id)


def serves(model_id: str) -> bool:
    """True when the engine answers for ``model_id``; false sends the feature down its in-process path."""
    return served_name(model_id) is not None


@contextlib.contextmanager
def in_process_turn() -> Iterator[None]:
    """Wrap the in-process path of a generation feature, for a model the engine does not serve.

    With an engine configured, generation events skip the model queue (:mod:`lab.scheduler`; tabs.common
    sends them to the "engine" group), so one that falls back to the in-process model takes its turn in
    the queue here, as its own waiter (the student is not known in the library). Without an engine the
    event already holds its turn and this does nothing.
    """
    if not configured():
        yield
        return
    from lab.scheduler import SCHEDULER

    with SCHEDULER.turn(f"in process #{next(_FALLBACKS)}", "generation the engine does not serve"):
        yield


@functools.lru_cache(maxsize=4)
def _client(url: str, key: str, timeout: float | None) -> Any:
    from openai import OpenAI  # only here: without an engine the lab never imports openai

    # One retry covers a pooled connection that an engine restart closed; more would hide a dead engine.
    return OpenAI(base_url=url, api_key=key or "not-needed", timeout=timeout, max_retries=1)


def client() -> Any:
    """The ``openai.OpenAI`` client for the configured engine (read timeout: ``LAB_REQUEST_SECONDS``)."""
    engine = settings()
    if engine is None:
        raise EngineError("No generation engine is configured: set LAB_GENERATION_URL.")
    return _client(engine.url, engine.key, request_seconds() or None)


def _translate(error: Exception, url: str, started: bool) -> EngineError:
    """The lab's message for what the ``openai`` client (or httpx under it) raised."""
    import httpx
    import openai

    if isinstance(error, (openai.APITimeoutError, httpx.TimeoutException)):
        return EngineError(
            f"The generation engine at {url} did not answer within {request_seconds():g} s "
            "(LAB_REQUEST_SECONDS). It may be overloaded; try again in a moment."
        )
    if started and not isinstance(error, openai.APIStatusError):
        return EngineError(
            f"The generation engine at {url} stopped in the middle of the answer (it may have been "
            "restarted). Try again."
        )
    if isinstance(error, openai.APIConnectionError):
        return EngineError(
            f"The generation engine at {url} cannot be reached. Is it running? "
            "(`make engine` starts llama.cpp's server; unset LAB_GENERATION_URL to generate in process.)"
        )
    if isinstance(error, openai.APIStatusError):
        return EngineError(
            f"The generation engine at {url} refused the request (HTTP {error.status_code}): {error.message}"
        )
    return EngineError(f"The generation engine at {url} failed: {error}")


def _pieces(stream: Any, until: float | None) -> Iterator[str]:
    for chunk in stream:
        if until is not None and time.monotonic() > until:
            raise EngineError(
                f"The answer ran past {request_seconds():g} s (LAB_REQUEST_SECONDS); it was stopped."
            )
        for choice in chunk.choices:
            piece = choice.delta.content if hasattr(choice, "delta") else choice.text
            if piece:
                yield piece


def _stream(
    kind: str, model_id: str, max_tokens: int, sampling: dict[str, Any], **body: Any
) -> Iterator[str]:
    """Open one streaming request and yield its text pieces; closing the generator closes the response."""
    import httpx
    import openai

    engine, name = settings(), served_name(model_id)
    if engine is None or name is None:
        raise EngineError(f"The generation engine does not serve {model_id} (LAB_GENERATION_MODELS).")
    seconds = request_seconds()
    until = time.monotonic() + seconds if seconds else None
    endpoint = client().chat.completions if kind == "chat" else client().completions
    extra = {key: sampling.pop(key) for key in list(sampling) if key not in {"temperature", "top_p", "seed"}}
    try:
        stream = endpoint.create(
            model=name, max_tokens=max_tokens, stream=True, extra_body=extra or None, **sampling, **body
        )
    except (openai.OpenAIError, httpx.HTTPError) as error:
        raise _translate(error, engine.url, started=False) from error
    try:
        yield from _pieces(stream, until)
    except (openai.OpenAIError, httpx.HTTPError) as error:
        raise _translate(error, engine.url, started=True) from error
    finally:
        stream.close()  # the engine sees the client go and drops the request (Stop, or an error above)


def _sampling(temperature: float, top_p: float | None, **extra: Any) -> dict[str, Any]:
    """OpenAI sampling fields: temperature 0 is greedy on vLLM and llama.cpp alike."""
    fields: dict[str, Any] = {"temperature": float(temperature)}
    if top_p is not None:
        fields["top_p"] = float(top_p)
    return {**fields, **{key: value for key, value in extra.items() if value is not None}}


def chat_stream(
    model_id: str,
    messages: list[dict[str, Any]],
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float | None = None,
    **extra: Any,
) -> Iterator[str]:
    """A chat answer's text pieces (the engine applies the model's chat template).

    Args:
        messages: OpenAI chat messages; a user message's ``content`` may be a list of parts, with an
            image as ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``.
        extra: engine-specific sampling fields sent as they are (``repetition_penalty``, ``ignore_eos``).

    Raises:
        EngineError: the engine is down, too slow, stopped mid-answer or refused the request.
    """
    return _stream("chat", model_id, max_tokens, _sampling(temperature, top_p, **extra), messages=messages)


def completion_stream(
    model_id: str, prompt: str, max_tokens: int, temperature: float = 0.0, **extra: Any
) -> Iterator[str]:
    """The text pieces that continue ``prompt`` as it is, no chat template (``/v1/completions``)."""
    return _stream("completion", model_id, max_tokens, _sampling(temperature, None, **extra), prompt=prompt)


def growing(pieces: Iterable[str]) -> Iterator[str]:
    """The text so far after each piece, as the lab's in-process streams yield it. Closing this closes
    ``pieces`` too (and so the engine's request)."""
    text = ""
    with contextlib.closing(iter(pieces)) as stream:  # type: ignore[type-var]
        for piece in stream:
            text += piece
            yield text


def chat_text(model_id: str, messages: list[dict[str, Any]], max_tokens: int, **sampling: Any) -> str:
    """A whole chat answer (streamed underneath, so the time limit and the messages are the same)."""
    return "".join(chat_stream(model_id, messages, max_tokens, **sampling))


def status(timeout: float = 2.0) -> dict[str, Any] | None:
    """The engine as the System panel shows it: URL, health, the models it serves, or None when unset.

    ``/health`` answers 200 on llama.cpp's server once its model is loaded and on vLLM when it is up; the
    model list is ``GET /v1/models``. Short timeouts: the panel must not hang on a dead engine.
    """
    import httpx

    engine = settings()
    if engine is None:
        return None
    root = engine.url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {engine.key}"} if engine.key else {}
    report: dict[str, Any] = {"url": engine.url, "healthy": False, "models": [], "error": ""}
    try:
        with httpx.Client(timeout=timeout, headers=headers) as http:
            report["healthy"] = http.get(f"{root}/health").status_code == 200
            listed = http.get(f"{engine.url}/models")
            listed.raise_for_status()
            report["models"] = [item["id"] for item in listed.json().get("data", [])]
    except httpx.HTTPError as error:
        report["error"] = f"{type(error).__name__}: {error}"
    report["routes"] = dict(engine.models)
    return report
