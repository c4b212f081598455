"""Plain helpers the tests share (fixtures live in ``conftest.py``; this module holds no state)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

from lab import paths

ROOT = paths.ROOT
ARTIFACTS = ROOT / "test-artifacts"
BOOK_IMAGES = paths.BOOK_IMAGES
CAR = BOOK_IMAGES / "car.png"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_settings(**changes: object) -> Any:
    """The environment's settings, bound to a free port on 127.0.0.1."""
    from lab.config import Settings

    return dataclasses.replace(
        Settings.from_env(), server_name="127.0.0.1", server_port=free_port(), **changes
    )


@contextlib.contextmanager
def serve_tab(build: Callable[..., Any], title: str, tab_id: str, **changes: object) -> Iterator[str]:
    """One tab alone (``build(demo, settings)``), served on 127.0.0.1 as ``app.serve`` serves the lab."""
    import gradio as gr

    import app

    settings = local_settings(**changes)
    with gr.Blocks(title=f"LLM Lab · {title}") as demo, gr.Tabs(), gr.Tab(title, id=tab_id):
        build(demo, settings)
    try:
        yield app.serve(demo, settings, block=False)
    finally:
        demo.close()


def is_outside(url: str) -> bool:
    """True for a request that would leave this machine (the lab must work offline, from no CDN)."""
    if url.startswith(("data:", "blob:", "about:")):
        return False
    return urlparse(url).hostname not in LOCAL_HOSTS


def in_own_loop(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end on a new event loop in its own thread.

    ``asyncio.run`` refuses to start where a loop already runs, and Playwright's sync API (the browser
    tests) leaves one running in the main thread for the rest of the session.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
