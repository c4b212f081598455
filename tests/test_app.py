"""The app as its users reach it: imported, launched on 127.0.0.1, called with gradio_client."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab.config import Settings
from tests.helpers import ROOT, local_settings


def test_importing_the_app_loads_no_model_and_not_even_torch():
    code = (
        "import sys, app; from lab import cache; "
        "assert cache.loaded() == [], cache.loaded(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "assert app.demo is not None; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


def test_classroom_mode_refuses_to_start_without_logins(monkeypatch):
    monkeypatch.setenv("LAB_CLASSROOM", "1")
    monkeypatch.delenv("LAB_AUTH", raising=False)
    settings = Settings.from_env()
    assert settings.server_name == "0.0.0.0"
    with pytest.raises(ValueError, match="LAB_AUTH"):
        settings.check()
    monkeypatch.setenv("LAB_AUTH", "teacher:secret,student:pw")
    settings = Settings.from_env()
    settings.check()
    assert settings.auth == [("teacher", "secret"), ("student", "pw")]


def test_bad_auth_entry_is_named(monkeypatch):
    monkeypatch.setenv("LAB_AUTH", "nocolon")
    with pytest.raises(ValueError, match="user:password, got 'nocolon'"):
        Settings.from_env()


@pytest.mark.slow
def test_tokenize_api_returns_the_books_tokens(lab_server):
    from gradio_client import Client

    client = Client(lab_server, verbose=False)
    result = client.predict(
        "English and CAPITALIZATION", ["gpt2", "Xenova/gpt-4", "bert-base-cased"], api_name="/tokenize"
    )
    gpt2, gpt4, cased = result
    assert gpt2["tokens"] == ["English", " and", " CAP", "ITAL", "IZ", "ATION"]
    assert gpt4["tokens"] == ["English", " and", " CAPITAL", "IZATION"]
    assert gpt2["vocab_size"] == 50_257 and gpt2["error"] is None
    assert cased["tokens"] == [] and "hf download bert-base-cased" in cased["error"]


@pytest.mark.slow
def test_tokenize_api_defaults_to_the_preset_and_refuses_text_over_the_cap(lab_server):
    from gradio_client import Client

    from lab import tokens

    client = Client(lab_server, verbose=False)
    result = client.predict(tokens.sample_text(), api_name="/tokenize")
    assert [r["name"] for r in result] == tokens.PRESET
    with pytest.raises(Exception, match="at most 20,000"):
        client.predict("x" * 20_001, ["gpt2"], api_name="/tokenize")
    # the server keeps serving after a refused request
    assert client.predict("ok", ["gpt2"], api_name="/tokenize")[0]["tokens"] == ["ok"]


@pytest.mark.slow
def test_only_the_documented_endpoints_are_public(lab_server):
    from gradio_client import Client

    api = Client(lab_server, verbose=False).view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {
        "/tokenize",
        "/attention",
        "/next_token",
        "/logit_lens",
        "/generate",
        "/similarity",
        "/topics_fit",
        "/topics_search",
        "/topics_representations",
        "/clip_search",
        "/clip_zero_shot",
        "/clip_matrix",
        "/caption",
        "/chat",
        "/finetune_start",
        "/finetune_status",
        "/finetune_cancel",
        "/finetune_compare",
    }


@pytest.mark.slow
def test_classroom_server_needs_login_and_only_loads_catalog_ids():
    from gradio_client import Client

    import app

    settings = local_settings(classroom=True, auth=[("student", "pw")], queue_size=8)
    demo = app.build_demo(settings)
    url = app.serve(demo, settings, block=False)
    try:
        with pytest.raises(ValueError, match="[Ll]ogin|auth"):
            Client(url, verbose=False)
        client = Client(url, auth=("student", "pw"), verbose=False)
        assert client.predict("hi", ["gpt2"], api_name="/tokenize")[0]["tokens"] == ["hi"]
        with pytest.raises(Exception, match="only loads the lab's catalog models"):
            client.predict("hi", ["someone/their-model"], api_name="/tokenize")
    finally:
        demo.close()


def test_user_errors_keeps_generators_streaming_and_turns_their_errors_into_messages():
    import inspect

    import gradio as gr

    from lab.errors import InputError
    from tabs.common import user_errors

    @user_errors
    def stream(n: int):
        yield "first"
        if n < 0:
            raise InputError("n must not be negative")
        if n == 0:
            raise ValueError("setting an array element with a sequence")  # numpy's words, not the lab's
        yield "second"

    assert inspect.isgeneratorfunction(stream)  # Gradio streams only what it sees as a generator
    assert list(stream(1)) == ["first", "second"]
    steps = stream(-1)
    assert next(steps) == "first"
    with pytest.raises(gr.Error, match="n must not be negative"):
        next(steps)
    steps = stream(0)
    next(steps)
    with pytest.raises(gr.Error) as caught:
        next(steps)
    assert caught.value.message.startswith("Internal error (ValueError)")
    assert "array element" not in caught.value.message  # a library's message never reaches the page as ours
