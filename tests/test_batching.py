"""Batching across students (issue 12, part 4): a batch answers each request as it would be answered alone,
one bad item fails only itself, and concurrent API calls from several clients do share a batch.

Real models: SmolLM2 and MiniLM (offline packages), tiny random CLIP and Llama (plumbing, not quality).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from lab import attention, clip, embeddings
from lab.attention import Prompt
from lab.batching import alone
from lab.errors import InputError
from lab.scheduler import SCHEDULER, Scheduler

PROMPTS = [
    "The capital of France is",
    "Hello",
    "Once upon a time, in a small village by the sea, there lived an old",
    "1, 2, 3, 4,",
]


def each_alone(batch_fn: Callable[[list[Any]], list[Any]], items: list[Any]) -> list[Any]:
    return [alone(batch_fn, item) for item in items]


def test_next_token_batch_of_prompts_of_different_lengths_equals_each_prompt_alone():
    prompts = [attention.prepare_prompt(p) for p in PROMPTS]
    batched = attention.next_token_logits_batch(prompts)
    for one, many in zip(each_alone(attention.next_token_logits_batch, prompts), batched, strict=True):
        assert np.abs(attention._softmax(one) - attention._softmax(many)).max() < 1e-4
        assert one.argmax() == many.argmax()
    france = attention.distribution(batched[0], attention.DECODER)
    assert france.tokens[0] == " Paris"


@pytest.mark.parametrize("model", ["encoder", "decoder"])
def test_attention_batch_gives_each_text_its_own_weights_as_alone(model, tiny_llama):
    where = {"encoder": (attention.ENCODER, None), "decoder": ("tiny/llama", tiny_llama)}[model]
    texts = ["The animal didn't cross the street because it was too tired.", "Hi", "the cat sat"]
    inputs = [attention.prepare_attention(text, *where) for text in texts]
    for one, many in zip(each_alone(attention.attention_batch, inputs), attention.attention_batch(inputs)):
        assert many.tokens == one.tokens and many.weights.shape == one.weights.shape
        assert np.abs(many.weights - one.weights).max() < 1e-5  # padding got no weight at all
        assert np.allclose(many.weights.sum(-1), 1, atol=1e-5)


def test_sentence_embeddings_of_several_requests_in_one_call_equal_each_request_alone():
    requests = [
        embeddings.prepare_texts(["I love bread.", "Baking is fun.", "Stocks fell."]),
        embeddings.prepare_texts(["A much longer sentence about the river bank after the rain.", "Cats"]),
        embeddings.prepare_texts(["The stock market fell sharply this morning."] * 3),
    ]
    batched = embeddings.embed_batch(requests)
    for one, many in zip(each_alone(embeddings.embed_batch, requests), batched, strict=True):
        assert one.shape == many.shape and np.abs(one - many).max() < 1e-5
    assert [len(vectors) for vectors in batched] == [3, 2, 3]


def test_tiny_random_clip_text_queries_in_one_pass_equal_each_query_alone(tiny_clip):
    model = clip.load(tiny_clip)
    queries = [clip.TextQuery.prepare(q, model) for q in ["a cat", "a rocket launch at night", "coffee"]]
    batched = clip.embed_queries(queries)
    for one, many in zip(each_alone(clip.embed_queries, queries), batched, strict=True):
        assert np.abs(one - many).max() < 1e-5
    with pytest.raises(InputError, match="Type what"):
        clip.TextQuery.prepare("   ", model)


def test_an_item_that_breaks_the_forward_pass_fails_alone_and_the_others_are_answered(tiny_llama):
    good = [attention.prepare_prompt(p, "tiny/llama", tiny_llama) for p in PROMPTS[:2]]
    broken = Prompt(good[0].model, (10**7,))  # no such token: the embedding lookup raises
    results = attention.next_token_logits_batch([good[0], broken, good[1]])
    assert isinstance(results[1], IndexError)
    for one, many in zip(each_alone(attention.next_token_logits_batch, good), [results[0], results[2]]):
        assert np.abs(attention._softmax(one) - attention._softmax(many)).max() < 1e-4


def test_a_prompt_over_the_token_cap_is_refused_in_its_own_request_before_it_waits():
    with pytest.raises(attention.TooManyTokens, match="reads at most"):
        attention.prepare_prompt("word " * (attention.PROMPT_TOKENS + 10))


@contextlib.contextmanager
def model_held(scheduler: Scheduler) -> Iterator[None]:
    """Hold the model queue (as a long request would) so that requests pile up and batch on release."""
    with scheduler.turn("someone-else", "a long request"):
        yield


def wait_until(condition: Callable[[], bool], seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_students_waiting_together_share_one_batch_and_only_the_broken_item_fails(tiny_llama):
    scheduler = Scheduler()
    good = [attention.prepare_prompt(p, "tiny/llama", tiny_llama) for p in PROMPTS]
    items = [*good[:2], Prompt(good[0].model, (10**7,)), *good[2:]]
    results: dict[int, Any] = {}

    def ask(number: int) -> None:
        try:
            results[number] = scheduler.run_batched(
                f"student-{number}",
                "next_token",
                key=items[number].batch_key,
                item=items[number],
                batch_fn=attention.next_token_logits_batch,
            )
        except Exception as error:
            results[number] = error

    with model_held(scheduler):
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(items))]
        for thread in threads:
            thread.start()
        wait_until(lambda: sum(row.state == "waiting" for row in scheduler.snapshot()) == len(items))
    for thread in threads:
        thread.join(60)
    assert scheduler.batch_sizes() == [len(items)]
    assert isinstance(results[2], IndexError)
    expected = each_alone(attention.next_token_logits_batch, good)
    for got, want in zip([results[n] for n in (0, 1, 3, 4)], expected, strict=True):
        assert np.abs(attention._softmax(got) - attention._softmax(want)).max() < 1e-4


def test_eight_clients_calling_next_token_at_once_are_answered_by_one_batch():
    """Through the launched attention tab: 8 gradio_client sessions (8 students) ask while the model is
    busy; on release one batch answers all 8 as each prompt alone, and a 9th over the cap is refused."""
    from gradio_client import Client

    from tabs import attention as attention_tab
    from tests.helpers import serve_tab

    prompts = [f"{PROMPTS[n % len(PROMPTS)]}{' and' * (n // len(PROMPTS))}" for n in range(8)]
    expected = [attention.next_token(p, k=5) for p in prompts]
    with serve_tab(attention_tab.build, "Attention", "attention") as url:
        clients = [Client(url, verbose=False) for _ in range(9)]
        before = len(SCHEDULER.batch_sizes())
        with model_held(SCHEDULER):
            jobs = [
                c.submit(p, attention.DECODER, 5, api_name="/next_token") for c, p in zip(clients, prompts)
            ]
            too_long = clients[8].submit("word " * 2000, api_name="/next_token")
            with pytest.raises(Exception, match="reads at most"):
                too_long.result(timeout=60)  # refused at once, while the model is still held

            def all_waiting() -> bool:
                return sum(row.kind == "next_token" for row in SCHEDULER.snapshot()) == len(prompts)

            wait_until(all_waiting)
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda job: job.result(timeout=120), jobs))
    assert SCHEDULER.batch_sizes()[before:] == [len(prompts)]
    for answer, want in zip(answers, expected, strict=True):
        assert [token for token, _ in answer] == [token for token, _ in want]
        assert np.allclose([p for _, p in answer], [p for _, p in want], atol=1e-4)


def test_tiny_random_blip2_captions_of_several_students_in_one_generate_equal_each_caption_alone(tiny_blip2):
    from lab import vision_chat
    from tests.helpers import ROOT

    images = [ROOT / "assets" / "book" / "images" / name for name in ("car.png", "cat.png", "puppy.png")]
    requests = [vision_chat.CaptionRequest.prepare(path, "tiny/random-blip2", tiny_blip2) for path in images]
    assert len({r.batch_key for r in requests}) == 1  # one model, one setting: they may share a batch
    batched = vision_chat.caption_batch(requests)
    alone_texts = [alone(vision_chat.caption_batch, r).text for r in requests]
    assert [c.text for c in batched] == alone_texts
    assert len(set(alone_texts)) > 1  # the rows are not one image's caption copied
    pixels = [c.prepared.inputs["pixel_values"] for c in batched]  # each caption kept its own image
    assert not np.allclose(pixels[0], pixels[1])
    with pytest.raises(vision_chat.NoImage):
        vision_chat.CaptionRequest.prepare(None, "tiny/random-blip2", tiny_blip2)  # refused before it waits
