"""An unreachable Hub, with no HF_HUB_OFFLINE set, is noticed once and the lab works offline meanwhile.

The Hub here is a "black hole" on 127.0.0.1: it accepts connections and never answers, as a dead uplink
or a captive portal does. The lab runs in a fresh interpreter without the offline flags this test suite
sets, so huggingface_hub would contact that address if the lab let it; the black hole counts every
connection.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from lab import hub
from tests.helpers import ROOT

SCRIPT = """
import json, time
from lab import hub, tokens
first = time.perf_counter()
one = tokens.compare(tokens.sample_text(), tokens.BOOK_TOKENIZERS)
second = time.perf_counter()
two = tokens.compare(tokens.sample_text(), tokens.BOOK_TOKENIZERS)
done = time.perf_counter()
print(json.dumps({
    "errors": {t.name: t.error for t in one},
    "same": [t.error for t in one] == [t.error for t in two],
    "probes": hub._probe.probes,
    "status": hub.status(),
    "seconds": [second - first, done - second],
}))
"""


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections, counts them and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.mark.slow
def test_unreachable_hub_without_the_flag_is_probed_once_and_missing_tokenizers_say_why(black_hole, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {
        "HF_ENDPOINT": f"http://127.0.0.1:{black_hole.port}",
        "HF_HOME": str(tmp_path / "hf-home"),  # an empty Hugging Face cache
        "LAB_HUB_PROBE_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print("first and second compare, seconds:", result["seconds"])  # reported, not asserted
    assert result["probes"] == 1 and len(black_hole.connections) == 1  # one probe, no lookup after it
    hub_only = {"bert-base-cased", "google/flan-t5-small", "facebook/galactica-1.3b"}
    for name, error in result["errors"].items():
        if name in hub_only:
            assert "cannot be reached from here" in error and "hf download" in error
        else:
            assert error is None, (name, error)  # the packaged vocabularies did not wait for the Hub
    assert result["same"]
    assert result["status"].startswith("Hugging Face Hub: unreachable, working offline")


def test_with_the_offline_flag_there_is_no_probe_and_the_message_names_the_flag(monkeypatch):
    hub.forget()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.reachable() is False and hub._probe.probes == 0
    assert "HF_HUB_OFFLINE=1" in hub.why_unreachable() and "offline by setting" in hub.status()


def test_a_failed_download_is_remembered_for_the_retry_while_then_forgotten(monkeypatch):
    hub.forget()
    hub.remember_failure("someone/model", "model", "HTTP 404")
    assert hub.recent_failure("someone/model", "model") == "HTTP 404"
    assert hub.recent_failure("someone/model", "tokenizer") is None
    monkeypatch.setenv("LAB_HUB_RETRY_MINUTES", "0")
    assert hub.recent_failure("someone/model", "model") is None


def test_the_system_panel_says_where_the_hub_stands(monkeypatch):
    from tabs import system

    hub.forget()
    monkeypatch.setattr(hub, "_ask", lambda: (False, "ConnectError: no route"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert "not asked yet" in system.memory_markdown()
    assert hub.reachable() is False
    panel = system.memory_markdown()
    assert "unreachable, working offline" in panel and "no route" in panel and "checks again at" in panel
    hub.forget()
