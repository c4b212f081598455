"""Answer calls to API names the lab does not publish with a clear 404, before Gradio sees them.

Gradio 6 answers ``POST /gradio_api/call/<unknown>`` and ``/gradio_api/run/<unknown>`` with a 500 and a
traceback in the server log, ``GET /gradio_api/call/<unknown>/<event>`` with a broken stream, and a
``/queue/join`` for a function index that does not exist with a 500 (``KeyError``). It also runs the page's
private handlers when they are called by name (``/gradio_api/run/predict``). This ASGI middleware checks the
name (or the index) first: a published endpoint passes; anything else gets ``404`` and a JSON body that
says which names exist. The page itself joins the queue by function index, and posts its examples to
``/run/predict`` with a function index: a known index passes unchanged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# /gradio_api/call/<name>, /call/v2/<name>, /run/<name>, /api/<name>, and the GET of a call's result.
_NAMED = re.compile(r"^/gradio_api/(?P<route>call/v2|call|run|api)/(?P<name>[^/]+)(?:/[^/]*)?/?$")
_JOIN = "/gradio_api/queue/join"
_MAX_JOIN_BODY = 64 * 2**20  # a join carries the inputs (text, not files: those are uploaded first)


class ApiNameGuard:
    """Refuse unknown API names and function indexes with a 404 (see the module's docstring)."""

    def __init__(self, app: ASGIApp, blocks: Any) -> None:
        self.app = app
        self.blocks = blocks

    def public_names(self) -> list[str]:
        return sorted(
            fn.api_name
            for fn in self.blocks.fns.values()
            if fn.api_name and getattr(fn, "api_visibility", "public") != "private"
        )

    def _known_index(self, index: Any) -> bool:
        return isinstance(index, int) and not isinstance(index, bool) and index in self.blocks.fns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        named = _NAMED.match(path)
        if named is not None:
            name = named["name"]
            if name not in self.public_names():
                if named["route"] in ("run", "api") and scope.get("method") == "POST":
                    # The page itself posts to /run/predict with a function index in the body (examples
                    # do): Gradio then ignores the name, so a known index passes.
                    body = await _read_body(receive)
                    if self._known_index(_fn_index(body)):
                        await self.app(scope, _replay(body, receive), send)
                        return
                await _not_found(send, f"This server has no API endpoint /{name}.", self.public_names())
                return
        elif path.rstrip("/") == _JOIN and scope.get("method") == "POST":
            body = await _read_body(receive)
            index = _fn_index(body)
            if isinstance(index, int) and not isinstance(index, bool) and not self._known_index(index):
                await _not_found(send, f"This server has no function {index!r}.", self.public_names())
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


def middleware(blocks: Any) -> Middleware:
    """The guard for ``blocks``, for ``launch(app_kwargs={"middleware": [...]})``."""
    return Middleware(ApiNameGuard, blocks=blocks)


async def _not_found(send: Send, message: str, names: list[str]) -> None:
    body = json.dumps(
        {
            "error": f"{message} The endpoints are: {', '.join('/' + n for n in names)} "
            "(GET /gradio_api/info describes them).",
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_JOIN_BODY:
            break  # Gradio refuses it, as it would have
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _fn_index(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # Gradio answers malformed bodies itself (422)
    return data.get("fn_index") if isinstance(data, dict) else None


def _replay(body: bytes, original: Receive) -> Receive:
    """A ``receive`` that hands the app the body read already, then listens as the real one does."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
