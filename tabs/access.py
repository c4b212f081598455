"""Who may do what on a shared server, at the web layer: one Starlette middleware and the session helpers.

:class:`AccessGuard` wraps Gradio's own routes (installed by ``app.serve`` through ``launch(app_kwargs=)``):

- ``POST /login``: after 5 wrong passwords within a minute, an address gets HTTP 429 for 30 s;
- ``POST /gradio_api/upload``: caps per request (bytes, files: 413) and per student per hour (429), on top
  of Gradio's per-file ``max_file_size``;
- ``GET /gradio_api/file=…`` (and its older spelling ``/gradio_api/file/…``): a file in a student's
  private folder (:data:`PRIVATE`), a result's download (:data:`RESULTS`) or a file a login uploaded
  (:data:`UPLOADS`) is served to its owner's login only; anyone else gets 403.

The rules themselves (owners, throttle, budgets, private folders) are :mod:`lab.sessions`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import LocalContext
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware
from starlette.requests import Request

from lab import export, sessions
from lab.config import Settings
from lab.scheduler import SCHEDULER
from lab.sessions import LoginThrottle, PrivateFolders, TooMuch, UploadBudget, UploadOwners, owner_of

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")  # Gradio serves files under both
UPLOAD_ROUTE = "/gradio_api/upload"
MB = 2**20

# The lab's own files live inside Gradio's upload folder, so Gradio serves them where they are (it copies
# any other file into its cache, under a name anyone could fetch) and the guard can see them: students'
# private files (galleries, topic runs), each result's downloads (one folder per result, gone after
# lab.export.KEEP_S), and the class's files (what the instructor sends to everyone).
PRIVATE = PrivateFolders(Path(get_upload_folder()) / "llm-lab-private")
RESULTS = PrivateFolders(Path(get_upload_folder()) / "llm-lab-results")
CLASS_FILES = Path(get_upload_folder()) / "llm-lab-class"
# The logins that uploaded each file Gradio received (read from the upload route's answers).
UPLOADS = UploadOwners()
SWEEP_S = 60.0  # old result folders are looked for at most this often


def private_folder(request: gr.Request | None) -> Path:
    """A new private folder for the student of ``request`` (their files, readable by their login only)."""
    return PRIVATE.create(owner_of(request))


def result_folder() -> Path:
    """A new folder for one result's downloads, readable by the login of the request being handled only.

    A served lab writes every result's files here (``lab.export.result_folder``); folders older than
    ``lab.export.KEEP_S`` are removed, as the library's own result folders are.
    """
    RESULTS.sweep(export.KEEP_S, every_s=SWEEP_S)
    return RESULTS.create(owner_of(LocalContext.request.get(None)))


def kept_by_page(blocks: Any, path: str | Path) -> bool:
    """True for a file Gradio keeps for the page itself (an example's picture, a component's first value):
    every reader of the page may read it, and nobody may delete it. A student who uploads the same bytes
    under the same name gets that very path back from Gradio."""
    if blocks is None:
        return False
    target = _resolved(path)
    kept = (file for block in blocks.blocks.values() for file in getattr(block, "keep_in_cache", ()))
    return any(_resolved(file) == target for file in kept)


def is_lab_file(path: str | Path) -> bool:
    """True for a file of the lab's own folders (private files, results, the class's files)."""
    target = _resolved(path)
    return PRIVATE.holds(target) or RESULTS.holds(target) or target.is_relative_to(CLASS_FILES.resolve())


def delete_upload(path: str | Path) -> None:
    """Delete a file Gradio received by upload, once read: only files in Gradio's upload folder, and never
    the lab's own files nor a file the page keeps (an example the student uploaded again)."""
    upload_root = Path(get_upload_folder()).resolve()
    target = _resolved(path)
    if not target.is_relative_to(upload_root) or is_lab_file(target):
        return
    if kept_by_page(LocalContext.blocks.get(None), target):
        return
    target.unlink(missing_ok=True)
    UPLOADS.forget(target)
    if target.parent != upload_root:
        with contextlib.suppress(OSError):  # Gradio keeps each upload in a folder of its own
            target.parent.rmdir()


def _resolved(path: str | Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(path)


# -- per-session state ------------------------------------------------------------------------------------


def session_state(
    value: Any, settings: Settings, delete_callback: Callable[[Any], None] | None = None
) -> Any:
    """A ``gr.State`` for one student's data, dropped (``delete_callback`` called) ``LAB_SESSION_TTL_H``
    after it last changed, or ``LAB_CLOSED_GRACE_S`` after its tab closed (:func:`free_closed_sessions`)."""
    return gr.State(value, time_to_live=settings.session_ttl_s, delete_callback=delete_callback)


def free_closed_sessions(demo: gr.Blocks, settings: Settings) -> None:
    """Free a closed tab's state ``LAB_CLOSED_GRACE_S`` after it closed, instead of Gradio's hour.

    Gradio marks a session closed when its heartbeat drops and keeps its state an hour (Gradio 6.31
    ``SessionState.STATE_TTL_WHEN_CLOSED``), and keeps the session's copy of the page config until 10,000
    sessions later. In a classroom that is every student's uploads, galleries and topic runs of every
    reload; so after the grace, unless the session was used again, its states' delete callbacks run and the
    session is forgotten. This is the one place that reads Gradio's ``StateHolder``.
    """

    def forget(session_hash: str, closed_at: float) -> None:
        holder = getattr(demo, "state_holder", None)
        if holder is None or session_hash not in holder.session_data:
            return
        used = holder.time_last_used.get(session_hash)
        if used is not None and used.timestamp() > closed_at:
            return  # the tab came back (a network blip): keep it
        holder.delete_state(session_hash)  # runs each gr.State's delete_callback
        with holder.lock:
            holder.session_data.pop(session_hash, None)
            holder.time_last_used.pop(session_hash, None)
        # Without logins the session is the student: its model seconds go with it. A login keeps its
        # usage across reloads (a reload must not reset a quota).
        SCHEDULER.forget(f"{sessions.SESSION}{session_hash}")

    async def closed(request: gr.Request) -> None:
        # Async, so that ``forget`` runs on the server's event loop, as Gradio's own sweep of expired
        # state does: the two never interleave.
        if request is None or not request.session_hash:
            return
        loop = asyncio.get_running_loop()
        loop.call_later(settings.closed_grace_s, forget, request.session_hash, time.time())

    demo.unload(closed)


# -- the middleware ---------------------------------------------------------------------------------------


def middleware(settings: Settings) -> list[Middleware]:
    """The lab's guard for ``launch(app_kwargs={"middleware": ...})``."""
    return [Middleware(AccessGuard, settings=settings)]


class AccessGuard:
    """A pure ASGI middleware (it streams uploads through, never buffering them) over Gradio's routes."""

    def __init__(self, app: Callable[..., Awaitable[None]], settings: Settings) -> None:
        self.app = app
        self.max_request_bytes = int(settings.max_upload_mb_per_request * MB)
        self.max_files = settings.max_upload_files_per_request
        self.throttle = LoginThrottle()
        self.budget = UploadBudget(int(settings.max_upload_mb_per_student * MB))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path.rstrip("/").endswith("/login"):
            await self._login(scope, receive, send)
        elif method == "POST" and path.rstrip("/").endswith(UPLOAD_ROUTE):
            await self._upload(scope, receive, send)
        elif method in ("GET", "HEAD") and any(route in path for route in FILE_ROUTES):
            await self._file(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- login ---------------------------------------------------------------------------------------
    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        address = _address(scope)
        wait = self.throttle.wait_s(address)
        if wait > 0:
            await _refuse(send, 429, self.throttle.message(wait), retry_after=wait)
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status and status[0] < 300:
            self.throttle.succeeded(address)
        elif status and 400 <= status[0] < 500:
            self.throttle.failed(address)
            log.info("wrong login from %s", address)

    # -- uploads -------------------------------------------------------------------------------------
    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        student = _username(scope, request) or _address(scope)
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = 0
        try:
            self._check_size(length)
            self.budget.check(student, length)
        except TooMuch as refusal:
            await _refuse(send, refusal.status, str(refusal), retry_after=refusal.retry_after_s, text=True)
            return
        marker = b"--" + _boundary(request.headers.get("content-type", ""))
        seen = {"bytes": 0, "markers": 0, "tail": b""}
        refused: list[TooMuch] = []
        started: list[int] = []
        answer = bytearray()  # Gradio's answer: the uploaded files' paths, as JSON

        async def counted() -> Message:
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen["bytes"] += len(body)
                window = seen["tail"] + body
                seen["markers"] += window.count(marker) - seen["tail"].count(marker)
                seen["tail"] = window[-(len(marker) - 1) :] if len(marker) > 1 else b""
                try:
                    self._check_size(seen["bytes"])
                    self._check_files(seen["markers"] - 1)  # the closing delimiter is a marker too
                except TooMuch as refusal:
                    refused.append(refusal)
                    return {"type": "http.disconnect"}  # Gradio stops reading; its reply is dropped
            return message

        async def reply(message: Message) -> None:
            if refused:
                return
            if message["type"] == "http.response.start":
                started.append(message["status"])
            elif message["type"] == "http.response.body" and started and started[0] < 300:
                answer.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted, reply)
        except Exception:
            if not refused:
                raise
        if refused:
            await _refuse(send, refused[0].status, str(refused[0]), text=True)
        elif started and started[0] < 300:
            self.budget.charge(student, seen["bytes"])
            user = _username(scope, request)
            if user:
                _record_uploads(bytes(answer), user)

    def _check_size(self, size: int) -> None:
        if size > self.max_request_bytes:
            raise TooMuch(
                f"This upload is over {self.max_request_bytes / MB:.0f} MB, the most the lab takes in one "
                "upload (all files together). Upload fewer or smaller files, or several times.",
                413,
            )

    def _check_files(self, files: int) -> None:
        if files > self.max_files:
            raise TooMuch(
                f"This upload holds more than {self.max_files} files, the most the lab takes at once. "
                "Send fewer files, or put them in a zip.",
                413,
            )

    # -- private files -------------------------------------------------------------------------------
    async def _file(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = next(r for r in FILE_ROUTES if r in scope["path"])
        path = scope["path"].split(route, 1)[1]
        if not _may_read(scope, path, _username(scope, Request(scope))):
            await _refuse(send, 403, "This file belongs to another student's session: it is not yours.")
            return
        await self.app(scope, receive, send)


def _may_read(scope: Scope, path: str, user: str | None) -> bool:
    """May the login ``user`` (None without logins) read the file at ``path``?"""
    for folders in (PRIVATE, RESULTS):
        if folders.holds(path):
            return folders.may_read(path, user)
    if UPLOADS.may_read(path, user):
        return True
    app = scope.get("app")
    return kept_by_page(app.get_blocks() if hasattr(app, "get_blocks") else None, path)


def _record_uploads(answer: bytes, user: str) -> None:
    """Record ``user`` as an owner of each file in the upload route's answer (a JSON list of paths)."""
    try:
        paths = json.loads(answer)
    except ValueError:
        return
    for path in paths if isinstance(paths, list) else []:
        if isinstance(path, str):
            UPLOADS.add(path, user)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def _username(scope: Scope, request: Request) -> str | None:
    """The logged-in user of a request, read as Gradio's ``/gradio_api/user`` route reads it."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or cookie_id is None:
        return None
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{cookie_id}"
    )
    return tokens.get(token) if token else None


def _boundary(content_type: str) -> bytes:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"').encode("latin-1")
    return b"\x00no-boundary\x00"


async def _refuse(
    send: Send, status: int, message: str, *, retry_after: float | None = None, text: bool = False
) -> None:
    """Answer with ``status`` and a sentence a person can read: JSON ``{"detail": …}`` as Gradio's
    HTTPExceptions, or plain text as Gradio's own upload errors (``text``), which the page shows as is."""
    body = message.encode() if text else json.dumps({"detail": message}).encode()
    kind = b"text/plain; charset=utf-8" if text else b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "CLASS_FILES",
    "PRIVATE",
    "RESULTS",
    "UPLOADS",
    "AccessGuard",
    "delete_upload",
    "free_closed_sessions",
    "is_lab_file",
    "kept_by_page",
    "middleware",
    "private_folder",
    "result_folder",
    "session_state",
]
