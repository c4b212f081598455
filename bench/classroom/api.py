"""The lab's web API over plain HTTP, as ``gradio_client`` calls it, at one HTTP session per student."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

CALL_TIMEOUT_S = 900.0


class ApiError(Exception):
    """An endpoint answered with an error (the lab's message, or Gradio's)."""


class LabAPI:
    """Calls the lab's named endpoints: ``POST /gradio_api/call/<name>`` with the positional inputs, then the
    answer from the event stream ``GET /gradio_api/call/<name>/<event id>``."""

    def __init__(self, url: str, session_hash: str | None = None) -> None:
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        # One session of the app, as one browser tab has: what the lab's owners (a fine-tune run answers
        # "not yours" to another session) and a per-student queue go by.
        self.session_hash = session_hash or uuid.uuid4().hex[:11]
        self._page: Any = None  # the heartbeat stream while the page is open

    def open_page(self) -> None:
        """Hold the session's heartbeat stream open, as a browser tab does while it shows the lab.

        When it closes (:meth:`close_page`) the server sees the tab close: it runs the page's unload
        events and frees the session after ``LAB_CLOSED_GRACE_S``. Nothing reads the stream: the server
        writes a few bytes every 15 s, which the socket's buffer holds."""
        import requests

        # Its own connection, as a page's heartbeat has (a pooled one may have been closed by the server).
        self._page = requests.get(
            f"{self.url}/gradio_api/heartbeat/{self.session_hash}", stream=True, timeout=60
        )

    def close_page(self) -> None:
        """Close the tab: drop the heartbeat connection."""
        if self._page is not None:
            self._page.raw.close()  # the socket itself: returning it to the pool would keep it open
            self._page.close()
            self._page = None

    def call(self, name: str, *inputs: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """The endpoint's output (a generator's last one); :class:`ApiError` when it answers an error."""
        name = name.strip("/")
        posted = self.session.post(
            f"{self.url}/gradio_api/call/{name}",
            json={"data": list(inputs), "session_hash": self.session_hash},
            timeout=60,
        )
        if posted.status_code != 200:
            raise ApiError(f"HTTP {posted.status_code}: {posted.text[:200]}")
        event_id = posted.json()["event_id"]
        stream = self.session.get(
            f"{self.url}/gradio_api/call/{name}/{event_id}", stream=True, timeout=timeout
        )
        event = None
        with contextlib.closing(stream):
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    data = line.partition(":")[2].strip()
                    value = json.loads(data) if data else None
                    if event == "error":  # Gradio 6 sends {"error": message, ...}; older ones the message
                        message = value.get("error") if isinstance(value, dict) else value
                        raise ApiError(str(message) if message else "error (no message)")
                    # One output comes as a one-element list of outputs.
                    return value[0] if isinstance(value, list) and len(value) == 1 else value
        raise ApiError(f"the event stream ended without an answer (last event {event!r})")

    def upload(self, path: Path) -> dict[str, Any]:
        """Upload a file as a page does; returns the file input the endpoints take."""
        with path.open("rb") as handle:
            answer = self.session.post(f"{self.url}/gradio_api/upload", files={"files": handle}, timeout=60)
        answer.raise_for_status()
        return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
