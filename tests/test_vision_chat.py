"""BLIP-2 visual chat (chapter 9): the library, its loader and the tab's API.

No BLIP-2 weights install offline, so every model test runs the tiny random BLIP-2 of ``lab.testing`` through
the lab's own loader (``lab.models.vision_chat_model``), the path the real weights take. Random weights check
the plumbing (prompts, tokens, streaming, errors), never the quality of an answer: the names say so.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab import cache, catalog, device, models, vision_chat
from lab.cache import OutOfMemory
from lab.catalog import ModelUnavailable
from lab.images import BadImage
from tests.helpers import ROOT, serve_tab

TINY = "tiny/random-blip2"
CAR = ROOT / "assets" / "book" / "images" / "car.png"
BOOK_TURN = ("Write down what you see in this picture.", "A sports car driving on the road at sunset")
BOOK_QUESTION = "What would it cost me to drive that car?"


@pytest.fixture
def vc(tiny_blip2: Path) -> Iterator[models.VisionChatModel]:
    with models.vision_chat_model(TINY, tiny_blip2) as leased:
        yield leased


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# -- the book's prompt ---------------------------------------------------------------------------


def test_build_prompt_is_the_books_memory_prompt():
    assert vision_chat.build_prompt([BOOK_TURN], BOOK_QUESTION) == (
        "Question: Write down what you see in this picture. Answer: A sports car driving on the road at "
        "sunset. Question: What would it cost me to drive that car? Answer:"
    )
    assert vision_chat.build_prompt([], "What is it?") == "Question: What is it? Answer:"
    turns = [BOOK_TURN, ("Is it fast?", "yes"), ("Who drives it?", "a man.")]
    assert vision_chat.build_prompt(turns, "Where?") == (
        "Question: Write down what you see in this picture. Answer: A sports car driving on the road at "
        "sunset. Question: Is it fast? Answer: yes. Question: Who drives it? Answer: a man.. "
        "Question: Where? Answer:"
    )


def test_tiny_random_blip2_chat_prompt_of_several_turns_is_what_the_model_reads(vc):
    turns = [("What is it?", "a car"), ("Is it fast?", "yes")]  # the tiny model reads 128 tokens at most
    prepared = vision_chat.prepare_chat(vc, CAR, turns, "Why?", vision_chat.Decoding(max_new_tokens=5))
    assert (
        prepared.prompt
        == "Question: What is it? Answer: a car. Question: Is it fast? Answer: yes. Question: Why? Answer:"
    )
    assert prepared.dropped == 0 and prepared.history == turns
    ids = prepared.inputs["input_ids"][0].tolist()
    image_token = vc.model.config.image_token_id
    assert ids == [image_token] * 4 + vc.processor.tokenizer(prepared.prompt)["input_ids"]


def test_tiny_random_blip2_caption_is_the_books_call(vc):
    prepared = vision_chat.prepare_caption(vc, CAR)
    assert prepared.prompt == ""  # the image alone
    image_token, bos = vc.model.config.image_token_id, vc.processor.tokenizer.bos_token_id
    assert prepared.inputs["input_ids"][0].tolist() == [image_token] * 4 + [bos]
    assert prepared.generate_kwargs == {
        "max_new_tokens": 20,
        "repetition_penalty": 1.0,
        "do_sample": False,
        "num_beams": 1,
    }


# -- end to end with the tiny random model -------------------------------------------------------


def test_tiny_random_blip2_caption_runs_end_to_end_and_loads_once(tiny_blip2, fresh_cache):
    first = vision_chat.caption(CAR, TINY, path=tiny_blip2)
    again = vision_chat.caption(str(CAR), TINY, path=tiny_blip2)
    assert isinstance(first, str) and first.strip() and first == again  # greedy: the same text twice
    (entry,) = [s for s in cache.stats() if s.key.startswith(TINY)]
    assert entry.misses == 1 and entry.hits >= 1 and "vision-chat" in entry.key


def test_tiny_random_blip2_streaming_yields_growing_text_ending_in_the_answer(tiny_blip2):
    # The streamer hands text over word by word; this prompt makes the seeded random model write spaces.
    turns = [("a", "b")]
    parts = list(
        vision_chat.answer(CAR, turns, "What is it?", TINY, stream=True, path=tiny_blip2, max_new_tokens=20)
    )
    assert len(parts) >= 2
    assert all(later.startswith(earlier) and later != earlier for earlier, later in zip(parts, parts[1:]))
    whole = vision_chat.answer(CAR, turns, "What is it?", TINY, path=tiny_blip2, max_new_tokens=20)
    assert parts[-1] == whole


def test_tiny_random_blip2_beam_search_and_sampling_run(vc):
    beams = vision_chat.answer(
        CAR, [], "What?", vc, True, method="beam search", num_beams=3, max_new_tokens=8
    )
    assert len(list(beams)) == 1  # beam search cannot stream: the best beam is known at the end
    sampled = vision_chat.answer(CAR, [], "What?", vc, method="sampling", temperature=0.7, max_new_tokens=8)
    assert isinstance(sampled, str)


def test_tiny_random_blip2_sampled_answers_repeat_for_the_same_seed(vc):
    # The tab's calls: prepare_chat, then generate_stream (streamed) or generate_text.
    sampled = {"method": "sampling", "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 12}
    turns = [("a", "b")]
    first = vision_chat.answer(CAR, turns, "What is it?", vc, seed=1234, **sampled)
    streamed = list(vision_chat.answer(CAR, turns, "What is it?", vc, True, seed=1234, **sampled))
    other = vision_chat.answer(CAR, turns, "What is it?", vc, seed=99, **sampled)
    assert first and streamed[-1] == first
    assert other != first  # twelve tokens drawn from the whole vocabulary: another seed, another answer
    drawn = vision_chat.Decoding(**sampled).seeded()
    assert drawn.seed is not None and drawn.seeded() == drawn  # a seed is drawn once, then kept
    assert vision_chat.Decoding(seed=5).seeded().seed == 5 and vision_chat.Decoding().seeded().seed is None
    again = vision_chat.prepare_chat(vc, CAR, turns, "What is it?", drawn)
    assert vision_chat.generate_text(vc, again) == vision_chat.generate_text(vc, again)
    assert vision_chat.prepare_chat(vc, CAR, turns, "What?", vision_chat.Decoding(seed=5)).seed is None


def test_tiny_random_blip2_with_a_t5_language_model_runs_through_the_same_code(tiny_blip2, tmp_path):
    # Salesforce/blip2-flan-t5-xl is BLIP-2 with an encoder-decoder (Flan-T5): the same loader and calls.
    from transformers import AutoConfig, Blip2Config, Blip2ForConditionalGeneration, T5Config

    opt = AutoConfig.from_pretrained(tiny_blip2)
    special = {"pad_token_id": opt.text_config.pad_token_id, "eos_token_id": opt.text_config.eos_token_id}
    t5 = T5Config(
        vocab_size=opt.text_config.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=special["pad_token_id"],
        **special,
    )
    config = Blip2Config(
        vision_config=opt.vision_config.to_dict(),
        qformer_config=opt.qformer_config.to_dict(),
        text_config=t5.to_dict(),
        num_query_tokens=opt.num_query_tokens,
        image_token_index=opt.image_token_index,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Blip2ForConditionalGeneration(config).save_pretrained(tmp_path, safe_serialization=True)
    # The processor (image processor, tokenizer with its <image> token) is the OPT folder's.
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (tmp_path / name).write_bytes((tiny_blip2 / name).read_bytes())
    with models.vision_chat_model("tiny/random-blip2-t5", tmp_path) as t5_chat:
        assert not t5_chat.decoder_only and t5_chat.context == 128  # T5: the tokenizer's length
        assert isinstance(vision_chat.caption(CAR, t5_chat), str)
        parts = list(vision_chat.answer(CAR, [("a", "b")], "What?", t5_chat, stream=True, max_new_tokens=10))
        assert parts[-1] == vision_chat.answer(CAR, [("a", "b")], "What?", t5_chat, max_new_tokens=10)


def test_tiny_random_blip2_history_is_trimmed_to_the_context_oldest_first(vc):
    turns = [(f"Question number {i}?", f"answer {i}") for i in range(12)]
    prepared = vision_chat.prepare_chat(vc, CAR, turns, "And now?", vision_chat.Decoding(max_new_tokens=40))
    assert 0 < prepared.dropped < len(turns)
    assert prepared.history == turns[prepared.dropped :]  # the most recent turns stay
    assert prepared.prompt_tokens + 40 <= vc.context == 128
    one_more = vision_chat.build_prompt(turns[prepared.dropped - 1 :], "And now?")
    assert 4 + len(vc.processor.tokenizer(one_more)["input_ids"]) + 40 > 128  # the fewest turns were dropped
    assert any("oldest" in note and "turns were left out" in note for note in prepared.notes)


def test_fit_history_drops_the_fewest_oldest_turns():
    turns = [(f"q{i}", " ".join(["word"] * i)) for i in range(10)]

    def words(prompt: str) -> int:
        return len(prompt.split())

    for budget in range(3, 80, 7):
        kept, dropped = vision_chat.fit_history(turns, "new", words, budget)
        fits = [
            d for d in range(len(turns) + 1) if words(vision_chat.build_prompt(turns[d:], "new")) <= budget
        ]
        assert dropped == fits[0] and kept == turns[dropped:]
    with pytest.raises(vision_chat.PromptTooLong):
        vision_chat.fit_history(turns, "new", words, 2)


def test_a_question_that_cannot_fit_the_context_says_what_to_do(vc):
    with pytest.raises(vision_chat.PromptTooLong, match="context of 128 tokens.*lower max new tokens"):
        vision_chat.prepare_chat(vc, CAR, [], "What is it?", vision_chat.Decoding(max_new_tokens=120))


def test_tiny_random_blip2_under_the_hood_shows_what_the_model_saw(vc):
    prepared = vision_chat.prepare_chat(vc, CAR, [], "What is it?", vision_chat.Decoding(max_new_tokens=5))
    hood = vision_chat.under_the_hood(vc, prepared)
    assert hood.size == (32, 32) and hood.original_size == (492, 520)
    assert hood.query_tokens == 4 and hood.context == 128
    assert hood.tokens[:5] == ["<image>"] * 4 + ["<s>"] and hood.special[:5] == [True] * 5
    assert "".join(hood.tokens[5:]) == prepared.prompt and not any(hood.special[5:])
    # Undoing the normalisation gives back the squashed picture (bicubic, as the processor resizes).
    expected = np.asarray(vision_chat.open_for_model(CAR).image.resize((32, 32), Image.BICUBIC), dtype=float)
    assert np.abs(np.asarray(hood.image, dtype=float) - expected).mean() < 3


# -- bad input -----------------------------------------------------------------------------------


def test_no_image_and_empty_or_overlong_questions_are_refused_before_any_model_loads():
    # The default model is not available offline: these must fail on the input, not on the model.
    with pytest.raises(vision_chat.NoImage, match="Add an image first"):
        vision_chat.caption(None)
    with pytest.raises(vision_chat.NoImage, match="Add an image first"):
        vision_chat.answer(None, [], "What is it?", stream=True)
    with pytest.raises(vision_chat.EmptyQuestion, match="Type a question"):
        vision_chat.answer(CAR, [], "  \n ")
    with pytest.raises(vision_chat.QuestionTooLong, match="1,001 characters; the chat takes at most 1,000"):
        vision_chat.answer(CAR, [], "x" * 1001)
    for history in ([["only a question"]], "not a list", 42):
        with pytest.raises(ValueError, match=r"\[question, answer\] pairs"):
            vision_chat.answer(CAR, history, "What?")
    with pytest.raises(ValueError, match="over 10,000 characters"):
        vision_chat.answer(CAR, [("q", "a" * 10_000)], "What?")


def test_not_an_image_and_a_decompression_bomb_are_refused(monkeypatch):
    with pytest.raises(BadImage, match="is not an image the lab can read"):
        vision_chat.caption(b"I am a text file")
    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", "10000")
    with pytest.raises(BadImage, match="200×200 = 40,000 pixels; the lab accepts at most 10,000"):
        vision_chat.caption(encode(Image.new("L", (200, 200)), "PNG"))


def test_tiny_random_blip2_odd_modes_are_converted_then_captioned(vc):
    ramp = Image.fromarray(np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16))
    frames = [Image.new("RGB", (10, 10), colour) for colour in ("red", "blue")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    odd = {
        "CMYK": encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG"),
        "16-bit": encode(ramp, "PNG"),
        "transparency": encode(Image.new("RGBA", (40, 40), (255, 0, 0, 128)), "PNG"),
        "first frame": animated.getvalue(),
    }
    for expected, data in odd.items():
        prepared = vision_chat.prepare_caption(vc, data)
        assert any(expected in note for note in prepared.notes), (expected, prepared.notes)
        assert prepared.inputs["pixel_values"].shape == (1, 3, 32, 32)
        assert isinstance(vision_chat.generate_text(vc, prepared), str)


def test_one_pixel_and_very_wide_images_are_squashed_with_a_note(vc):
    tiny = vision_chat.prepare_caption(vc, Image.new("RGB", (1, 1), "white"))
    assert any("only 1×1 pixels" in note for note in tiny.notes)
    wide = vision_chat.prepare_caption(vc, np.zeros((2, 4000, 3), dtype=np.uint8))
    assert any("4000×2" in n and "without keeping its proportions" in n for n in wide.notes)
    assert vision_chat.under_the_hood(vc, wide).size == (32, 32)
    # For the real model, the page states the book's 224×224.
    assert "squashes it to 224×224" in vision_chat.resize_notes((4000, 2))[0]
    assert vision_chat.resize_notes((492, 520)) == []  # the book's car is close to square: no note


def test_decoding_choices_become_generate_arguments_and_bad_values_are_refused():
    assert vision_chat.Decoding().generate_kwargs()["do_sample"] is False
    beams = vision_chat.Decoding("beam search", num_beams=4.0, max_new_tokens=30.0).generate_kwargs()
    assert (
        beams["num_beams"] == 4 and beams["max_new_tokens"] == 30 and isinstance(beams["max_new_tokens"], int)
    )
    sampled = vision_chat.Decoding("sampling", temperature=0.7, top_p=0.8, repetition_penalty=1.3)
    assert sampled.generate_kwargs() == {
        "max_new_tokens": 50,
        "repetition_penalty": 1.3,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 0,
    }
    bad_values = (
        {"method": "nucleus"},
        {"temperature": 0},
        {"top_p": 1.5},
        {"max_new_tokens": 0},
        {"seed": -1},
    )
    for bad in bad_values:
        with pytest.raises(ValueError):
            vision_chat.Decoding(**bad)


# -- the model call: memory, stopping ------------------------------------------------------------


def _fail_once_with_oom(vc, monkeypatch):
    original, calls = vc.model.generate, []

    def generate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(vc.model, "generate", generate)


@pytest.mark.parametrize("stream", [False, True])
def test_cuda_out_of_memory_gives_a_clear_message_and_the_next_request_works(vc, monkeypatch, stream):
    _fail_once_with_oom(vc, monkeypatch)

    def ask():
        result = vision_chat.answer(CAR, [], "What is it?", vc, stream=stream, max_new_tokens=5)
        return list(result)[-1] if stream else result

    with pytest.raises(
        OutOfMemory, match="GPU ran out of memory while tiny/random-blip2 was writing an answer"
    ):
        ask()
    assert isinstance(ask(), str)


def test_closing_a_stream_stops_generation_and_joins_its_thread(vc):
    prepared = vision_chat.prepare_caption(vc, CAR, max_new_tokens=120)
    prepared.generate_kwargs["min_new_tokens"] = 120
    stream = vision_chat.generate_stream(vc, prepared)
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("generate-") and t.is_alive()]
    stop = threading.Event()
    stop.set()  # a reader who pressed Stop before the first token: generation ends at once
    parts = list(vision_chat.answer(CAR, [], "What?", vc, stream=True, stop=stop, max_new_tokens=60))
    assert len(parts) == 1


# -- the loader ----------------------------------------------------------------------------------


def test_on_a_cpu_the_plan_warns_about_memory_and_speed():
    plan = models.vision_chat_plan("Salesforce/blip2-opt-2.7b", device_name="cpu")
    assert plan.precision == "float32" and plan.quantization is None
    (note,) = plan.notes
    assert (
        "runs on the CPU in float32" in note and "15.6 GB of memory" in note and "tokens per second" in note
    )


def test_8bit_or_4bit_without_bitsandbytes_says_to_install_it(monkeypatch, tiny_blip2):
    monkeypatch.setattr(models.blip2, "_bitsandbytes_installed", lambda: False)
    for bits in ("8-bit", "4-bit"):
        with pytest.raises(
            models.MissingDependency, match=f"{bits} loading needs the bitsandbytes package.*pip install"
        ):
            models.vision_chat_plan(quantization=bits)
    with pytest.raises(models.MissingDependency, match="pip install bitsandbytes"):
        vision_chat.caption(CAR, TINY, path=tiny_blip2, quantization="8-bit")
    monkeypatch.setattr(models.blip2, "_bitsandbytes_installed", lambda: True)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        models.vision_chat_plan(quantization="4-bit", device_name="cpu")


def test_auto_precision_quantises_only_when_the_gpu_is_short_of_memory(monkeypatch):
    monkeypatch.setattr(device, "select", lambda name=None: device.Placement("cuda", torch.float16))
    monkeypatch.setattr(models.blip2, "_bitsandbytes_installed", lambda: True)
    book = "Salesforce/blip2-opt-2.7b"  # 7.8 GB in 16-bit, with room to run: 9.4 GB
    assert models.vision_chat_plan(book, free_bytes=int(20e9)).precision == "float16"
    assert models.vision_chat_plan(book, free_bytes=int(6e9)).precision == "8-bit"
    short = models.vision_chat_plan(book, free_bytes=int(3e9))
    assert short.precision == "4-bit" and "3.0 GB are free" in short.notes[0]
    assert models.vision_chat_plan(book, quantization="none", free_bytes=int(3e9)).precision == "float16"
    monkeypatch.setattr(models.blip2, "_bitsandbytes_installed", lambda: False)
    fallback = models.vision_chat_plan(book, free_bytes=int(6e9))
    assert fallback.precision == "float16" and "pip install bitsandbytes" in fallback.notes[0]


def test_offline_the_books_models_say_what_is_missing_and_how_to_get_it():
    with pytest.raises(ModelUnavailable) as missing, models.vision_chat_model():
        pass
    message = str(missing.value)
    assert "BLIP-2 OPT-2.7b (Salesforce/blip2-opt-2.7b) weights are not available here" in message
    assert "15.5 GB" in message and catalog.fetch_command("Salesforce/blip2-opt-2.7b") in message
    with pytest.raises(ModelUnavailable, match="hf download Salesforce/blip2-flan-t5-xl"):
        vision_chat.caption(CAR, "Salesforce/blip2-flan-t5-xl")


def test_tiny_random_blip2_loads_from_lab_model_dir_under_the_books_id(
    monkeypatch, tmp_path, tiny_blip2, fresh_cache
):
    (tmp_path / "Salesforce--blip2-opt-2.7b").symlink_to(tiny_blip2, target_is_directory=True)
    monkeypatch.setenv("LAB_MODEL_DIR", str(tmp_path))
    assert models.source_of("Salesforce/blip2-opt-2.7b").origin == "model-dir"
    assert isinstance(vision_chat.caption(CAR), str)
    assert models.vision_chat_plan().notes == ()  # sized from the folder: a tiny model needs no warning


def test_a_folder_without_blip2_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelUnavailable, match="bert model, not BLIP-2"):
        vision_chat.caption(CAR, "someone/not-blip2", path=tmp_path)


# -- the tab, as gradio_client reaches it ----------------------------------------------------------


@pytest.fixture(scope="module")
def vision_server() -> Iterator[str]:
    """The BLIP-2 tab alone, launched as the app launches it, on a free port of 127.0.0.1."""
    from tabs import vision_chat as tab

    with serve_tab(tab.build, "BLIP-2 chat · ch. 9", "vision-chat") as url:
        yield url


@pytest.fixture(scope="module")
def client(vision_server: str):
    from gradio_client import Client

    return Client(vision_server, verbose=False)


def _car():
    from gradio_client import handle_file

    return handle_file(str(CAR))


@pytest.mark.slow
def test_api_names_are_caption_and_chat(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/caption", "/chat"]
    names = [p["parameter_name"] for p in api["named_endpoints"]["/chat"]["parameters"]]
    assert names[:6] == ["image", "question", "history", "model", "folder", "precision"]


@pytest.mark.slow
def test_api_caption_and_streamed_chat_with_the_tiny_random_blip2(client, tiny_blip2):
    caption = client.predict(_car(), TINY, str(tiny_blip2), api_name="/caption")
    assert caption == vision_chat.caption(CAR, TINY, path=tiny_blip2)
    job = client.submit(_car(), "What is it?", [["a", "b"]], TINY, str(tiny_blip2), api_name="/chat")
    final = job.result()
    parts = job.outputs()
    assert final == parts[-1] == vision_chat.answer(CAR, [("a", "b")], "What is it?", TINY, path=tiny_blip2)
    assert len(parts) >= 2 and all(b.startswith(a) for a, b in zip(parts, parts[1:]))


@pytest.mark.slow
def test_api_sampled_answers_repeat_for_the_same_seed_with_the_tiny_random_blip2(client, tiny_blip2):
    # /chat is the tab's handler: image, question, history, model, folder, precision, then the decoding.
    sampled = ("sampling", 3, 1.0, 0.9, 10, 1.0)
    ask = (_car(), "What is it?", [["a", "b"]], TINY, str(tiny_blip2), "auto", *sampled)
    first = client.predict(*ask, 4321, api_name="/chat")
    assert first and client.predict(*ask, 4321, api_name="/chat") == first
    assert first == vision_chat.answer(
        CAR,
        [("a", "b")],
        "What is it?",
        TINY,
        path=tiny_blip2,
        method="sampling",
        max_new_tokens=10,
        seed=4321,
    )


@pytest.mark.slow
def test_api_bad_input_comes_back_as_a_message_and_the_server_keeps_serving(
    client, tiny_blip2, tmp_path, monkeypatch
):
    # the server runs in this process
    monkeypatch.setattr(models.blip2, "_bitsandbytes_installed", lambda: False)
    folder = str(tiny_blip2)
    text_file = tmp_path / "notes.png"
    text_file.write_text("I am not a picture")
    from gradio_client import handle_file

    refusals = [
        ((handle_file(str(text_file)), TINY, folder), "/caption", "is not an image the lab can read"),
        ((None, TINY, folder), "/caption", "Add an image first"),
        ((_car(),), "/caption", "hf download Salesforce/blip2-opt-2.7b"),
        ((_car(), TINY, folder, "8-bit"), "/caption", "pip install bitsandbytes"),
        ((_car(), "", [], TINY, folder), "/chat", "Type a question"),
        ((_car(), "y" * 1001, [], TINY, folder), "/chat", "the chat takes at most 1,000"),
        ((_car(), "Why?", [["only half a turn"]], TINY, folder), "/chat", r"\[question, answer\] pairs"),
    ]
    for args, api_name, message in refusals:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name=api_name)
    assert client.predict(_car(), TINY, folder, api_name="/caption")


@pytest.mark.slow
def test_api_out_of_memory_is_explained_and_the_next_request_works(client, tiny_blip2, monkeypatch):
    with models.vision_chat_model(TINY, str(tiny_blip2)) as shared:  # the server's cached model
        _fail_once_with_oom(shared, monkeypatch)
        with pytest.raises(
            Exception, match="GPU ran out of memory while tiny/random-blip2 was writing a caption"
        ):
            client.predict(_car(), TINY, str(tiny_blip2), api_name="/caption")
        assert client.predict(_car(), TINY, str(tiny_blip2), api_name="/caption")


@pytest.mark.slow
def test_a_second_request_from_the_same_reader_waits_for_the_first(client, tiny_blip2):
    # One GPU queue: the second request of a client starts once the first has finished, and both answer.
    args = (_car(), "What is it?", [["a", "b"]], TINY, str(tiny_blip2))
    first, second = client.submit(*args, api_name="/chat"), client.submit(*args, api_name="/chat")
    assert first.result() == second.result()


def test_model_calls_wait_in_the_shared_gpu_queue_and_nothing_else_does():
    import gradio as gr

    from tabs import common
    from tabs import vision_chat as tab
    from tests.helpers import local_settings

    with gr.Blocks() as demo:
        tab.build(demo, local_settings())
    model_calls = {"caption_view", "stream_answer", "stream_regenerated", "api_caption", "api_chat"}
    model_calls.add("ask_again")  # a shared link's questions, asked again when the link is opened
    seen = set()
    for fn in demo.fns.values():
        if fn.name in model_calls:
            seen.add(fn.name)
            # the "gpu" group's waiting room; the lab's model queue then runs one at a time
            assert (fn.concurrency_id, fn.concurrency_limit) == ("gpu", common.MODEL_WAITING_ROOM), fn.name
        else:
            assert fn.concurrency_id != "gpu", fn.name
    assert seen == model_calls


def test_the_page_refuses_a_second_answer_for_the_same_reader_while_one_is_on_its_way():
    import gradio as gr

    from tabs.vision_chat import _Busy

    busy = _Busy()
    busy.begin("reader-1")
    busy.begin("reader-2")  # other readers are not held up
    with pytest.raises(gr.Error, match="still on its way for you"):
        busy.begin("reader-1")
    busy.end("reader-1")
    busy.begin("reader-1")


@pytest.mark.slow
def test_classroom_server_refuses_folders_and_ids_outside_the_catalog(tiny_blip2):
    import gradio as gr
    from gradio_client import Client

    import app
    from tabs import vision_chat as tab
    from tests.helpers import local_settings

    settings = local_settings(classroom=True, auth=[("student", "pw")])
    with gr.Blocks() as demo:
        tab.build(demo, settings)
    url = app.serve(demo, settings, block=False)
    try:
        client = Client(url, auth=("student", "pw"), verbose=False)
        with pytest.raises(Exception, match="only loads the lab's catalog models"):
            client.predict(_car(), "Salesforce/blip2-opt-2.7b", str(tiny_blip2), api_name="/caption")
        with pytest.raises(Exception, match="tiny/random-blip2 is not in the list of choices"):
            client.predict(_car(), TINY, "", api_name="/caption")
    finally:
        demo.close()
