"""Plain helpers the tests share (fixtures live in ``conftest.py``; this module holds no state)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import socket
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
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


def page_event(
    url: str,
    cookies: Any,
    elem_id: str,
    trigger: str = "click",
    values: dict[str, Any] | None = None,
    session: str | None = None,
) -> dict[Any, Any]:
    """Run the event a page runs when ``trigger`` fires on the component ``elem_id``, as the page itself sends
    it (the queue's join and data routes, with a login's ``cookies``), for events the API does not publish.

    Every input has its value in the page's config unless ``values`` (by elem_id) says otherwise; a file is a
    ``{"path": ..., "meta": {"_type": "gradio.FileData"}}``. ``session``: the page session to run it in (its
    ``gr.State`` values), a new one by default. Returns the outputs' values by elem_id (else by component
    id); raises AssertionError with the page's message when the event fails.
    """
    import json
    import secrets

    import httpx

    values = values or {}
    config = httpx.get(f"{url}config", cookies=cookies, timeout=30).json()
    props = {c["id"]: c.get("props", {}) for c in config["components"]}
    target = next(i for i, p in props.items() if p.get("elem_id") == elem_id)
    event = next(
        d for d in config["dependencies"] if [target, trigger] in d["targets"] and d.get("backend_fn")
    )
    data = [values.get(props[i].get("elem_id"), props[i].get("value")) for i in event["inputs"]]
    session = session or secrets.token_hex(8)
    body = {"data": data, "event_data": None, "fn_index": event["id"], "trigger_id": target}
    joined = httpx.post(
        f"{url}gradio_api/queue/join", json={**body, "session_hash": session}, cookies=cookies, timeout=30
    )
    assert joined.status_code == 200, joined.text
    with httpx.stream(
        "GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, cookies=cookies, timeout=600
    ) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[len("data:") :]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                assert message.get("success"), message.get("output", {}).get("error")
                outputs = message["output"]["data"]
                return {props[i].get("elem_id") or i: v for i, v in zip(event["outputs"], outputs)}
    raise AssertionError(f"the event of {elem_id} never completed")


# -- exported files (lab.export) --

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"


def by_suffix(paths: list[str]) -> dict[str, list[Path]]:
    """Exported files by suffix (``.png``, ``.svg``, ``.csv``, ``.json``), each checked to hold bytes."""
    found: dict[str, list[Path]] = {}
    for path in map(Path, paths):
        assert path.is_file() and path.stat().st_size > 0, path
        found.setdefault(path.suffix, []).append(path)
    return found


def check_figures(files: dict[str, list[Path]], count: int) -> None:
    """``count`` figures, each a PNG and an SVG that parse, and every SVG draws something."""
    assert len(files[".png"]) == count and len(files[".svg"]) == count
    for png in files[".png"]:
        assert png.read_bytes().startswith(PNG_SIGNATURE)
    for svg in files[".svg"]:
        root = ET.parse(svg).getroot()
        assert root.tag == f"{SVG_NAMESPACE}svg"
        drawn = [
            e for e in root.iter() if e.tag.removeprefix(SVG_NAMESPACE) in {"path", "rect", "line", "use"}
        ]
        assert len(drawn) > 3


def rows(path: Path) -> list[list[str]]:
    """A CSV file's rows, the header first."""
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))
