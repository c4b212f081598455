"""Every API input checked in the lab's words, with the sliders' bounds; unknown API names get a 404;
messages that echo input are escaped; long texts are refused by their characters first; requests stop at
their time limit. The API tests call the launched app as a client would (``gradio_client``, ``httpx``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lab import validate
from lab.errors import InputError

INJECTED = "<img src=http://198.51.100.7/x.png>"  # TEST-NET-2: never routed, and the page must not ask


# -- the checks themselves -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (None, "got nothing (null)"),
        ("ten", "got 'ten'"),
        (51, "got 51"),
        (2.5, "got 2.5"),
        (True, "got True"),
    ],
)
def test_a_bound_refuses_what_its_slider_could_not_send(value, got):
    with pytest.raises(InputError) as refused:
        validate.bound("k", value)
    assert str(refused.value) == f"k must be a whole number between 1 and 50, {got}."


def test_a_bound_takes_slider_floats_and_optional_nothing():
    assert validate.bound("k", 10.0) == 10 and isinstance(validate.bound("k", 10.0), int)
    assert validate.bound("temperature", 0) == 0.0
    assert validate.bound("min_samples", None) is None  # optional: "not set"
    with pytest.raises(InputError, match="temperature must be a number between 0 and 2, got nan"):
        validate.bound("temperature", float("nan"))


def test_texts_and_choices_say_what_was_wrong():
    with pytest.raises(InputError, match="prompt must be text, got 12"):
        validate.text(12, "prompt")
    with pytest.raises(InputError, match="prompt is empty"):
        validate.text(None, "prompt")
    with pytest.raises(InputError, match="texts must be a list of texts, got 'one'"):
        validate.texts("one", "texts", max_items=3)
    with pytest.raises(InputError, match="4 texts given; the lab takes at most 3"):
        validate.texts(["a"] * 4, "texts", max_items=3)
    with pytest.raises(InputError, match=r"method must be one of 'pca', 'umap', got nothing \(null\)"):
        validate.choice(None, "method", ["pca", "umap"])


def test_a_megabyte_of_text_is_refused_by_its_characters_without_tokenizing_it_all():
    counted: list[int] = []

    def count(text: str) -> int:
        counted.append(len(text))
        return len(text.split())

    with pytest.raises(InputError) as refused:
        validate.check_tokens("word " * 200_000, count, 512, what="The prompt")
    message = str(refused.value)
    assert "The prompt is about 200,000 tokens (1,000,000 characters)" in message
    assert "reads at most 512 tokens" in message
    assert counted == [512 * validate.CHARS_PER_TOKEN]  # one slice was tokenized, never the megabyte
    validate.check_tokens("a short prompt", count, 512)  # within the cap: no refusal
    with pytest.raises(InputError, match="The text is 600 tokens; this tab reads at most 512"):
        validate.check_tokens("a " * 600, count, 512)


def test_sliders_are_built_from_the_same_bounds_as_the_api():
    import gradio as gr

    from tabs.common import slider

    with gr.Blocks():
        built = slider("n_neighbors", elem_id="x")
    bound = validate.BOUNDS["n_neighbors"]
    assert (built.minimum, built.maximum, built.value) == (bound.low, bound.high, bound.default)


def test_the_apps_sliders_stop_where_the_api_does():
    import app

    by_id = {getattr(block, "elem_id", None): block for block in app.demo.blocks.values()}
    for elem_id, name in [
        ("topics-neighbors", "n_neighbors"),
        ("topics-min-cluster-size", "min_cluster_size"),
        ("fwd-temperature", "temperature"),
        ("fwd-top-p", "top_p"),
        ("fwd-gen-tokens", "new_tokens"),
        ("clip-k", "clip_k"),
        ("vc-max-new-tokens", "vc_max_new_tokens"),
    ]:
        bound = validate.BOUNDS[name]
        assert (by_id[elem_id].minimum, by_id[elem_id].maximum) == (bound.low, bound.high), elem_id


# -- escaping --------------------------------------------------------------------------------------


def test_views_show_markup_from_users_as_text():
    from lab.attention_view import static_vs_contextual
    from lab.clip.view import bullets
    from lab.embeddings import StaticVsContextual
    from lab.topics.view import upload_status

    shown = [
        upload_status(columns=[INJECTED, "text"]),
        bullets([f"{INJECTED}.jpg: not an image"]),
        static_vs_contextual(
            StaticVsContextual(INJECTED, ["a", "b"], np.ones((2, 2)), np.eye(2), [[INJECTED], [INJECTED]])
        )[2],
    ]
    for text in shown:
        assert "<img" not in text and "&lt;img" in text


# -- the time limit --------------------------------------------------------------------------------


def test_a_forward_pass_past_its_deadline_stops_at_the_next_module(tiny_llama):
    import torch

    from lab import deadline, models

    with models.causal_lm("tiny/llama", tiny_llama) as network:
        ids = torch.tensor([[1, 2, 3]])
        with deadline.time_limit(60):
            network(input_ids=ids)  # well within the limit
        with deadline.within(deadline.Deadline(0.0, 120)), pytest.raises(deadline.RequestTooLong) as stopped:
            network(input_ids=ids)
        assert "took longer than 120 s and was stopped" in str(stopped.value)
        network(input_ids=ids)  # outside the limit, the model runs as before
        with deadline.within(deadline.Deadline(0.0, 120)):
            with deadline.paused():  # what the cache does while a model loads: not the request's time
                network(input_ids=ids)
            with pytest.raises(deadline.RequestTooLong):
                network(input_ids=ids)


def test_a_generation_thread_carries_the_deadline_of_its_request(tiny_llama):
    import torch

    from lab import deadline, models, streaming

    with models.causal_lm("tiny/llama", tiny_llama) as network:
        tokenizer = models.tokenizer("tiny/llama", tiny_llama)
        with deadline.within(deadline.Deadline(0.0, 5)), pytest.raises(deadline.RequestTooLong):
            stream = streaming.TokenStream(
                network, tokenizer, input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=50
            )
            list(stream)
    assert streaming.running_threads() == []


def test_time_limited_generators_stop_between_steps(monkeypatch):
    from lab.deadline import RequestTooLong
    from tabs.common import time_limited

    monkeypatch.setenv("LAB_REQUEST_SECONDS", "1e-9")
    closed = threading.Event()

    def steps():
        try:
            while True:
                yield "step"
        finally:
            closed.set()

    wrapped = time_limited(steps)
    with pytest.raises(RequestTooLong):
        list(wrapped())
    assert closed.is_set()  # the wrapped generator was closed (a stream's thread would be joined)


# -- the launched app: every endpoint, as a client calls it ----------------------------------------


@pytest.fixture(scope="module")
def client(lab_server):
    from gradio_client import Client

    return Client(lab_server, verbose=False)


def refused(client, api_name: str, *args, **kwargs) -> str:
    """The message a call is refused with (it must be refused)."""
    with pytest.raises(Exception) as error:
        client.predict(*args, api_name=api_name, **kwargs)
    message = str(error.value)
    assert "Internal error" not in message, message
    return message


@pytest.mark.parametrize(
    ("api_name", "kwargs", "expected"),
    [
        (
            "/next_token",
            {"prompt": "Hi", "k": None, "temperature": None, "top_p": None},
            "k must be a whole number between 1 and 50, got nothing (null)",
        ),
        ("/next_token", {"prompt": "Hi", "k": "ten"}, "k must be a whole number between 1 and 50, got 'ten'"),
        ("/next_token", {"prompt": "Hi", "temperature": 3}, "temperature must be a number between 0 and 2"),
        ("/next_token", {"prompt": None}, "Type a prompt first"),
        ("/logit_lens", {"prompt": "Hi", "k": 1000}, "k must be a whole number between 1 and 10, got 1000"),
        ("/attention", {"text": 42}, "text must be text, got 42"),
        ("/similarity", {"texts": "one text"}, "texts must be a list of texts"),
        ("/similarity", {"texts": ["a"] * 201}, "201 texts given; the lab takes at most 200"),
        (
            "/topics_fit",
            {"n_neighbors": 1_000_000},
            "n_neighbors must be a whole number between 2 and 100, got 1000000",
        ),
        (
            "/topics_search",
            {"query": "football", "top_n": "x"},
            "top_n must be a whole number between 1 and 50",
        ),
        ("/topics_representations", {"diversity": 5}, "diversity must be a number between 0 and 1, got 5"),
        ("/clip_search", {"query": "a cat", "k": 0}, "k must be a whole number between 1 and 24, got 0"),
        ("/clip_search", {"query": None}, "Type what to search for"),
        ("/clip_zero_shot", {"image": None, "labels": ["cat"]}, "No image was sent"),
        ("/clip_zero_shot", {"image": None, "labels": None}, "No image was sent"),
        ("/clip_matrix", {"images": "x"}, "Send the images as a list of files"),
        ("/finetune_start", {"changes": {"seed": "x"}}, "must be a whole number, not 'x'"),
        ("/finetune_start", {"changes": "seed=1"}, "changes must be an object"),
        ("/finetune_status", {"job_id": "abc", "log_lines": -1}, "log_lines must be a whole number"),
        ("/finetune_status", {"job_id": None}, "job_id is empty"),
        (
            "/finetune_compare",
            {"max_new_tokens": 10_000},
            "max_new_tokens must be a whole number between 1 and 256",
        ),
        ("/tokenize", {"text": "hi", "tokenizers": "gpt2"}, "tokenizers must be a list of texts, got 'gpt2'"),
        ("/tokenize", {"text": 5}, "text must be text, got 5"),
    ],
)
def test_every_endpoint_refuses_bad_input_in_the_labs_words(client, api_name, kwargs, expected):
    assert expected in refused(client, api_name, **kwargs)


def test_a_megabyte_prompt_is_refused_by_its_length_before_any_model_runs(client):
    message = refused(client, "/next_token", "word " * 200_000)
    # "about … (N characters)" is said only by the character check, which runs before the whole text is
    # tokenized and before the model is leased.
    assert "The text (for HuggingFaceTB/SmolLM2-135M-Instruct) is about" in message
    assert "(1,000,000 characters); this view reads at most 512 tokens" in message
    message = refused(client, "/similarity", ["short", "word " * 100_000])
    assert "Text 2 is about" in message and "an embedding reads at most 256 tokens" in message


def test_the_chat_decoding_has_the_sliders_bounds(client):
    from gradio_client import handle_file

    from tests.helpers import CAR

    decoding = {"method": "beam search", "num_beams": 100, "temperature": 1.0, "top_p": 0.9}
    message = refused(
        client,
        "/chat",
        image=handle_file(str(CAR)),
        question="What is it?",
        history=[],
        model="Salesforce/blip2-opt-2.7b",
        folder="",
        precision="auto",
        max_new_tokens=20,
        repetition_penalty=1.0,
        **decoding,
    )
    # The page's slider (built from the same bound) refuses it first, in Gradio's words; the library
    # refuses it in the lab's words for any other caller.
    assert "Value 100 is greater than maximum value 8" in message
    from lab import vision_chat

    with pytest.raises(InputError, match="num_beams must be a whole number between 1 and 8, got 100"):
        vision_chat.Decoding("beam search", num_beams=100)


def test_messages_that_echo_input_are_escaped(client):
    message = refused(client, "/next_token", "Hi", INJECTED)
    assert "<img" not in message and "&lt;img" in message


def test_unknown_api_names_get_a_404_not_a_500(lab_server):
    import httpx

    base = lab_server.rstrip("/")
    for method, path, body in [
        ("POST", "/gradio_api/call/nope", {"data": []}),
        ("POST", "/gradio_api/run/nope", {"data": []}),
        ("POST", "/gradio_api/call/v2/nope", {}),
        ("POST", "/gradio_api/run/predict", {"data": []}),  # a page handler, not an endpoint
        ("GET", "/gradio_api/call/nope/0123abcd", None),
    ]:
        answer = httpx.request(method, base + path, json=body, timeout=30)
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
        assert "has no API endpoint" in answer.json()["error"] and "/next_token" in answer.json()["error"]
    joined = httpx.post(
        base + "/gradio_api/queue/join",
        json={"data": [], "fn_index": 99_999, "session_hash": "x"},
        timeout=30,
    )
    assert joined.status_code == 404 and "no function 99999" in joined.json()["error"]
    # the page posts its examples to /run/predict with a function index: a known index passes
    import app

    index = next(i for i, fn in app.demo.fns.items() if fn.api_name == "tokenize")
    by_index = httpx.post(
        base + "/gradio_api/run/predict", json={"data": ["hi", ["gpt2"]], "fn_index": index}, timeout=30
    )
    assert by_index.status_code == 200, by_index.text[:200]
    # a published name still works through the same routes
    called = httpx.post(base + "/gradio_api/call/tokenize", json={"data": ["hi", ["gpt2"]]}, timeout=30)
    assert called.status_code == 200 and "event_id" in called.json()


@pytest.mark.slow
def test_a_request_past_its_time_limit_stops_and_the_queue_moves_on(client, monkeypatch):
    monkeypatch.setenv("LAB_REQUEST_SECONDS", "1e-9")
    message = refused(client, "/attention", "The cat sat on the mat.")
    assert "took longer than 1e-09 s and was stopped" in message
    monkeypatch.delenv("LAB_REQUEST_SECONDS")
    result = client.predict("The cat sat on the mat.", api_name="/attention")  # the GPU queue is free
    assert result["tokens"][0] == "[CLS]"


@pytest.mark.slow
@pytest.mark.browser
def test_a_shared_link_cannot_put_markup_into_the_page(open_page, lab_server):
    from urllib.parse import quote

    page = open_page(f"{lab_server}?tok={quote(INJECTED + ',gpt2')}", wait_for="#token-columns .col .toks")
    # The named tokenizer is not one: its column (or a message) says so, as text.
    page.get_by_text(INJECTED).first.wait_for(timeout=60_000)
    page.wait_for_timeout(1_000)  # any toast the load raised has been drawn by now
    assert page.locator("img[src*='198.51.100.7']").count() == 0
    assert not [url for url in page.outside_requests if "198.51.100.7" in url]
