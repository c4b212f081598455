"""Generation on a real serving engine: llama.cpp's ``llama-server`` serving the packaged SmolLM2 GGUF.

The server is the one ``make engine-build`` compiles (``make test`` builds it first); a session fixture
starts it on a free port with 16 slots and stops it at the end. Nothing is mocked: the lab talks to it with
the ``openai`` client as it would to vLLM.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab.catalog import SMOLLM2
from tests.helpers import free_port, local_settings

SLOTS = 16
ROUTE = f"{SMOLLM2}=smollm2"


def _engine_server(log: Path, port: int | None = None, parallel: int = SLOTS):  # -> EngineServer
    from lab.engine_server import EngineServer, server_binary

    if not server_binary().exists():
        pytest.fail(f"{server_binary()} is missing: `make test` builds it (`make engine-build`)")
    return EngineServer(port, parallel=parallel, log=log)


@pytest.fixture(scope="session")
def engine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """llama-server with 16 slots on a free port, for the whole session."""
    with _engine_server(tmp_path_factory.mktemp("engine") / "llama-server.log") as server:
        yield server


@pytest.fixture
def on_engine(engine_server: object, monkeypatch: pytest.MonkeyPatch) -> object:
    """The lab configured to generate on the session's engine (SmolLM2 routed there)."""
    monkeypatch.setenv("LAB_GENERATION_URL", engine_server.url)
    monkeypatch.setenv("LAB_GENERATION_MODELS", ROUTE)
    return engine_server


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _busy_slots(server: object) -> int:
    return sum(bool(slot["is_processing"]) for slot in json.loads(_get(f"{server.base}/slots")))


def _wait_until(check, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _ask(text: str, max_tokens: int = 4) -> str:
    from lab import engine

    return engine.chat_text(SMOLLM2, [{"role": "user", "content": text}], max_tokens)


# -- without a server: the settings and an engine that is not there (fast) ----------------------------


def test_generation_stays_in_process_unless_an_engine_is_configured(monkeypatch: pytest.MonkeyPatch):
    from lab import engine

    monkeypatch.delenv("LAB_GENERATION_URL", raising=False)
    assert not engine.configured() and not engine.serves(SMOLLM2) and engine.status() is None
    monkeypatch.setenv("LAB_GENERATION_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("LAB_GENERATION_MODELS", f"{ROUTE}, adapter:20260101-000000-abcdef12=run1")
    assert engine.served_name(SMOLLM2) == "smollm2" and engine.served_name("adapter:20260101-000000-abcdef12")
    assert not engine.serves("gpt2")  # not in the map: in process
    monkeypatch.setenv("LAB_GENERATION_MODELS", "")
    assert engine.served_name("gpt2") == "gpt2"  # an empty map: every model, under the lab's id
    monkeypatch.setenv("LAB_GENERATION_MODELS", "no-equals-sign")
    with pytest.raises(ValueError, match="lab-id=engine-name"):
        engine.configured()


def test_an_engine_that_is_down_gives_the_labs_message_naming_its_url(monkeypatch: pytest.MonkeyPatch):
    from lab.errors import LabError

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    monkeypatch.setenv("LAB_GENERATION_URL", url)
    monkeypatch.setenv("LAB_GENERATION_MODELS", ROUTE)
    with pytest.raises(LabError, match=re.escape(f"The generation engine at {url} cannot be reached")):
        _ask("Hello")


# -- against llama-server -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_same_greedy_continuation_in_process_and_on_the_engine(monkeypatch, engine_server):
    """Greedy decoding of the same checkpoint gives the same tokens, as far as the arithmetic agrees.

    In process the Q4_1 weights are dequantised to float32; llama.cpp multiplies the quantised weights
    with 8-bit-quantised activations. Greedy paths agree while the top token wins by a margin and may part
    once two candidates are nearly tied, so the comparison is the first 4 tokens of a short factual prompt
    whose next tokens are clear (" Paris" has p≈0.77 at the first step).
    """
    from lab import attention

    prompt = "The capital of France is"
    monkeypatch.delenv("LAB_GENERATION_URL", raising=False)
    *_, here = attention.continue_text(prompt, SMOLLM2, 4)
    monkeypatch.setenv("LAB_GENERATION_URL", engine_server.url)
    monkeypatch.setenv("LAB_GENERATION_MODELS", ROUTE)
    *_, there = attention.continue_text(prompt, SMOLLM2, 4)
    assert here.startswith(" Paris")
    assert there == here


@pytest.mark.slow
def test_16_concurrent_chats_are_all_answered_and_the_system_panel_shows_the_engine(on_engine):
    from tabs import system

    questions = [f"Name one colour. Question {i}." for i in range(SLOTS)]
    with ThreadPoolExecutor(SLOTS) as pool:
        answers = list(pool.map(_ask, questions))
    assert len(answers) == SLOTS and all(answer.strip() for answer in answers)
    panel = system.engine_markdown()
    assert f"Generation engine at `{on_engine.url}`: healthy" in panel and "`smollm2`" in panel


@pytest.mark.slow
def test_closing_a_stream_mid_answer_frees_the_engines_slot(on_engine):
    from lab import engine

    assert _wait_until(lambda: _busy_slots(on_engine) == 0)
    messages = [{"role": "user", "content": "Tell me a very long story about a dragon."}]
    stream = engine.chat_stream(SMOLLM2, messages, max_tokens=2000, ignore_eos=True)
    with contextlib.closing(stream):
        for _ in range(3):
            next(stream)
        assert _busy_slots(on_engine) == 1  # the answer is being written
    # Closing the stream closed the connection: the server drops the request long before 2,000 tokens.
    assert _wait_until(lambda: _busy_slots(on_engine) == 0, seconds=5)


@pytest.mark.slow
def test_an_answer_past_the_request_limit_is_stopped_with_the_labs_message(on_engine, monkeypatch):
    from lab import engine
    from lab.errors import LabError

    monkeypatch.setenv("LAB_REQUEST_SECONDS", "1.5")
    messages = [{"role": "user", "content": "Tell me a very long story about a dragon."}]
    started = time.monotonic()
    with pytest.raises(LabError, match=re.escape("1.5 s (LAB_REQUEST_SECONDS)")):
        "".join(engine.chat_stream(SMOLLM2, messages, max_tokens=2000, ignore_eos=True))
    assert time.monotonic() - started < 30  # 2,000 tokens would take minutes here
    assert _wait_until(lambda: _busy_slots(on_engine) == 0, seconds=5)


@pytest.mark.slow
def test_an_engine_killed_mid_answer_gives_a_clear_message_and_the_next_request_after_restart_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from lab import engine
    from lab.errors import LabError

    server = _engine_server(tmp_path / "llama-server.log", parallel=2).start()
    try:
        monkeypatch.setenv("LAB_GENERATION_URL", server.url)
        monkeypatch.setenv("LAB_GENERATION_MODELS", ROUTE)
        messages = [{"role": "user", "content": "Count from one to a thousand."}]
        stream = engine.chat_stream(SMOLLM2, messages, max_tokens=2000, ignore_eos=True)
        next(stream)
        server.kill()
        with pytest.raises(LabError, match=re.escape(f"at {server.url} stopped in the middle of the answer")):
            for _ in stream:
                pass
        with pytest.raises(LabError, match="cannot be reached. Is it running?"):
            _ask("Hello")
        server.start()
        assert _ask("Say hello.").strip()
    finally:
        server.stop()


def _predicted(server: object) -> float:
    """llama-server's count of tokens it has generated (``/metrics``)."""
    metrics = _get(f"{server.base}/metrics")
    return float(re.search(r"^llamacpp:tokens_predicted_total (\S+)$", metrics, re.M).group(1))


@pytest.mark.slow
def test_a_topic_label_by_smollm2_is_written_by_the_engine(on_engine):
    from lab.topics.representations import generate_label

    before = _predicted(on_engine)
    label = generate_label(SMOLLM2, "Documents about bread, flour, ovens and bakers.")
    assert label.strip() and _predicted(on_engine) > before


@pytest.mark.slow
def test_the_apps_generate_endpoint_answers_from_the_engine(on_engine):
    """The attention tab's free generation, through gradio_client, is written by the engine: its count of
    predicted tokens grows by the request's tokens, and the text is the engine's own greedy answer."""
    from gradio_client import Client

    import app
    from lab import attention

    *_, direct = attention.continue_text("Once upon a time", SMOLLM2, 6)
    before = _predicted(on_engine)
    settings = local_settings()
    demo = app.build_demo(settings)  # built with LAB_GENERATION_URL set: generation events use the engine
    try:
        client = Client(app.serve(demo, settings, block=False), verbose=False)
        text = client.predict("Once upon a time", SMOLLM2, 6, api_name="/generate")
    finally:
        demo.close()
    assert text == direct
    assert _predicted(on_engine) - before == 6


# -- BLIP-2 on an engine: vLLM only (llama.cpp cannot serve it) ---------------------------------------


def test_a_vision_request_carries_the_image_as_a_data_url_and_the_books_prompt():
    import base64
    import io

    from PIL import Image

    from lab import vision_chat
    from tests.helpers import ROOT

    image = vision_chat.open_for_model(ROOT / "assets" / "book" / "images" / "car.png").image
    prompt = vision_chat.build_prompt([("What is it?", "a car")], "What colour is it?")
    (message,) = vision_chat.engine_messages(image, prompt)
    picture, text = message["content"]
    header, data = picture["image_url"]["url"].split(",", 1)
    assert header == "data:image/png;base64" and text == {"type": "text", "text": prompt}
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == image.size


@pytest.mark.slow
def test_an_engine_without_vision_refuses_an_image_with_the_labs_message(on_engine):
    """llama.cpp serves SmolLM2 without a vision projector: the request is refused, in the lab's words."""
    from lab import vision_chat
    from lab.errors import LabError
    from tests.helpers import ROOT

    car = ROOT / "assets" / "book" / "images" / "car.png"
    with pytest.raises(LabError, match=re.escape(f"The generation engine at {on_engine.url} refused")):
        vision_chat.engine_caption(car, SMOLLM2)
