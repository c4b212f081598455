"""What every tab shares: event settings and turning the library's errors into messages for the page."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
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


def user_errors(fn: F) -> F:
    """Show the library's expected errors as a clear message in the page (``gr.Error``), not a traceback.

    Anything else is logged with its traceback and reported as an internal error; other users' sessions
    are untouched either way.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as error:
            raise gr.Error(str(error), duration=None) from None
        except Exception as error:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(
                f"Internal error ({type(error).__name__}); the server log has the details."
            ) from None

    return wrapper  # type: ignore[return-value]


def model_choices(ids: list[str]) -> list[tuple[str, str]]:
    """Dropdown choices for model ids: "Title · id" for catalog models, the bare id otherwise."""
    return [(f"{catalog.entry(i).title} · {i}" if catalog.is_known(i) else i, i) for i in ids]


def check_allowed(model_id: str, settings: Settings) -> None:
    """A classroom server loads only the lab's catalog models (free-form ids could fill its memory)."""
    if settings.classroom and not catalog.is_known(model_id):
        raise gr.Error(f"This classroom server only loads the lab's catalog models; {model_id} is not one.")
