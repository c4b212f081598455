"""The one stop-aware streamer: closing any stream ends its generation thread, then frees the model.

Tiny random-weight models (``lab.testing``) through the lab's own loaders: the names say so.
"""

from __future__ import annotations

import pytest

from lab import cache, models, streaming, vision_chat
from lab.attention import generate_stream
from tests.helpers import ROOT

CAR = ROOT / "assets" / "book" / "images" / "car.png"


def leases_held() -> int:
    return sum(entry.leases for entry in cache.stats())


def test_tiny_random_llama_attention_stream_closed_early_leaves_no_thread_and_frees_the_model(tiny_llama):
    stream = generate_stream("the cat sat on", "tiny/llama", new_tokens=60, path=tiny_llama)
    next(stream), next(stream)
    assert streaming.running_threads()  # generating now, the model leased
    assert leases_held() == 1
    stream.close()  # what Gradio does on Stop or a closed page
    assert streaming.running_threads() == []  # at once, not "soon": close joins the thread
    assert leases_held() == 0


def test_tiny_random_llama_attention_stream_read_to_the_end_reports_its_tokens(tiny_llama):
    *_, (text, final) = generate_stream("the cat sat on", "tiny/llama", new_tokens=5, path=tiny_llama)
    assert final is not None and final.tokens == 5 and final.text == text
    assert streaming.running_threads() == [] and leases_held() == 0


def test_tiny_random_llama_token_stream_raises_the_generation_error_in_the_reader(tiny_llama):
    tokenizer = models.tokenizer("tiny/llama", tiny_llama)
    with models.causal_lm("tiny/llama", tiny_llama) as network:
        stream = streaming.TokenStream(network, tokenizer, input_ids=None, max_new_tokens="many")
        with pytest.raises(Exception), stream:  # noqa: B017 - whatever transformers raises, it reaches us
            list(stream)
    assert streaming.running_threads() == []


def test_tiny_random_blip2_chat_stream_closed_early_leaves_no_thread_and_frees_the_model(tiny_blip2):
    answer = vision_chat.answer(
        str(CAR), [], "What is it?", "tiny/random-blip2", stream=True, path=tiny_blip2, max_new_tokens=40
    )
    next(answer)
    answer.close()
    assert streaming.running_threads() == []
    assert leases_held() == 0
