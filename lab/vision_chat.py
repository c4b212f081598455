"""Chapter 9: caption an image and chat about it with BLIP-2, the book's way.

The book loads ``Salesforce/blip2-opt-2.7b``, captions an image (``generate(max_new_tokens=20)`` on the image
alone), answers questions with the prompt ``"Question: … Answer:"``, and chats by writing the earlier
(question, answer) turns into the prompt (:func:`build_prompt`). Each call is split as everywhere in the lab:

- prepare (no model call): open the image safely, check the question, build the prompt, drop the oldest
  turns when the prompt would not fit the language model's context, run the processor → :class:`Prepared`;
- forward (the only step that runs the model): :func:`generate_text`, or :func:`generate_stream` for text
  that grows token by token;
- present: :func:`under_the_hood` recovers what the model saw: the 224×224 image, the prompt's tokens and
  the Q-Former's query tokens.

:func:`caption` and :func:`answer` do all three, for a notebook::

    from lab import vision_chat

    print(vision_chat.caption("assets/book/images/car.png"))
    for text in vision_chat.answer("assets/book/images/car.png", [], "What is it?", stream=True):
        print(text)
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import catalog, engine, models, validate
from lab.batching import isolated
from lab.errors import InputError
from lab.forward import forward
from lab.images import OpenedImage, open_image
from lab.streaming import TokenStream

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_MODEL = models.VISION_CHAT_DEFAULT
MODELS = ["Salesforce/blip2-opt-2.7b", "Salesforce/blip2-flan-t5-xl"]
CAPTION_TOKENS = 20  # the book's caption length
MAX_QUESTION_CHARS = 1_000
MAX_NEW_TOKENS = int(validate.BOUNDS["vc_max_new_tokens"].high)
MAX_HISTORY_TURNS = 200  # more could never fit a 2,048-token context; older turns are dropped unread
MAX_TURN_CHARS = 10_000  # a question and its answer; the model writes at most a few hundred tokens
BOOK_SIZE = (224, 224)  # what BLIP-2's processor resizes every image to
METHODS = ("greedy", "beam search", "sampling")
NO_IMAGE = (
    "Add an image first: upload one, take one with the webcam, paste one, or pick one of the book's examples."
)

Turn = tuple[str, str]


class NoImage(InputError):
    """A caption or an answer was asked for without an image."""


class EmptyQuestion(InputError):
    """The question is empty (or only whitespace)."""


class QuestionTooLong(InputError):
    """The question is over :data:`MAX_QUESTION_CHARS`; nothing was sent to the model."""


class PromptTooLong(InputError):
    """Even without any earlier turn, the prompt and the new tokens do not fit the model's context."""


# -- prepare -------------------------------------------------------------------------------------


def build_prompt(history: Sequence[Turn], question: str) -> str:
    """The book's chat prompt: every earlier turn, then the new question.

    ``[("Write down what you see in this picture.", "A sports car driving on the road at sunset")]`` and
    ``"What would it cost me to drive that car?"`` give ``"Question: Write down what you see in this
    picture. Answer: A sports car driving on the road at sunset. Question: What would it cost me to drive
    that car? Answer:"``; with no history it is ``"Question: {question} Answer:"``.
    """
    turns = [f"Question: {q} Answer: {a}." for q, a in history]
    return " ".join([*turns, f"Question: {question} Answer:"])


def check_question(question: str | None, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question without surrounding whitespace.

    Raises:
        EmptyQuestion: nothing to ask.
        QuestionTooLong: over ``max_chars`` characters.
    """
    text = (question or "").strip()
    if not text:
        raise EmptyQuestion("Type a question about the image first.")
    if len(text) > max_chars:
        raise QuestionTooLong(
            f"The question has {len(text):,} characters; the chat takes at most {max_chars:,}. "
            f"Shorten it by {len(text) - max_chars:,} characters."
        )
    return text


def check_history(history: Any) -> list[Turn]:
    """Earlier turns as (question, answer) pairs of text (lists from JSON are accepted).

    Raises:
        ValueError: not a list of pairs of text, or a turn longer than :data:`MAX_TURN_CHARS`.
    """
    message = "The history must be a list of [question, answer] pairs of text."
    if history is not None and not isinstance(history, (list, tuple)):
        raise InputError(message)
    turns = []
    for turn in history or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise InputError(message)
        if len(turn[0]) + len(turn[1]) > MAX_TURN_CHARS:
            raise InputError(f"A turn of the history is over {MAX_TURN_CHARS:,} characters; shorten it.")
        turns.append((turn[0].strip(), turn[1].strip()))
    return turns


def open_for_model(source: Any) -> OpenedImage:
    """Open an image safely with :func:`lab.images.open_image` (8-bit RGB, notes on what was converted).

    Args:
        source: a path, the file's bytes, a PIL image, a numpy array, or an already opened image.

    Raises:
        NoImage: ``source`` is None.
        lab.images.BadImage: not an image, damaged, or too large.
    """
    if source is None:
        raise NoImage(NO_IMAGE)
    if isinstance(source, OpenedImage):
        return source
    if type(source).__module__ == "numpy":
        from PIL import Image

        source = Image.fromarray(source)
    return open_image(source)


def resize_notes(image_size: tuple[int, int], size: tuple[int, int] = BOOK_SIZE) -> list[str]:
    """What squashing an image of ``image_size`` to ``size`` (no crop, no padding) does to it."""
    (width, height), (to_w, to_h) = image_size, size
    notes = []
    stretch = (width / height) / (to_w / to_h)
    if stretch >= 1.5 or stretch <= 1 / 1.5:
        squashed = "narrower" if stretch > 1 else "flatter"
        notes.append(
            f"The image is {width}×{height}; the processor squashes it to {to_w}×{to_h} without keeping "
            f"its proportions (the book warns about this), so the model sees everything "
            f"{max(stretch, 1 / stretch):.1f}× {squashed} than it is."
        )
    if width < to_w / 4 or height < to_h / 4:
        notes.append(
            f"The image is only {width}×{height} pixels; it is stretched to {to_w}×{to_h}, so the model sees "
            "large blocks of colour and little else."
        )
    return notes


@dataclass
class Decoding:
    """How the answer is chosen token by token.

    Args:
        method: ``greedy`` (the likeliest token each time), ``beam search`` (keep ``num_beams`` candidate
            answers, return the likeliest whole answer) or ``sampling`` (draw from the distribution,
            sharpened by ``temperature`` and cut to the ``top_p`` nucleus).
        max_new_tokens: at most this many tokens are generated.
        repetition_penalty: above 1 makes tokens already in the prompt or answer less likely.
        seed: with ``sampling``, torch's random generator is seeded with it just before generating, so the
            same seed gives the same answer again (on the same machine and precision); None: not seeded.
            :meth:`seeded` draws one to show and keep.
    """

    method: str = "greedy"
    num_beams: int = 3
    temperature: float = 1.0
    top_p: float = 0.9
    max_new_tokens: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        # Sliders and JSON hand over floats such as 50.0: the counts come back whole. The bounds are the
        # page's sliders' (lab.validate.BOUNDS), so the API takes what the page can send, and no more.
        if self.method not in METHODS:
            raise InputError(f"The decoding method must be one of {', '.join(METHODS)}, not {self.method!r}.")
        self.max_new_tokens = validate.bound("vc_max_new_tokens", self.max_new_tokens)
        self.num_beams = validate.bound("vc_num_beams", self.num_beams)
        self.temperature = validate.bound("vc_temperature", self.temperature)
        self.top_p = validate.bound("vc_top_p", self.top_p)
        self.repetition_penalty = validate.bound("vc_repetition_penalty", self.repetition_penalty)
        self.seed = validate.bound("vc_seed", self.seed)

    @property
    def samples(self) -> bool:
        """Whether the answer is drawn at random (``sampling``): only then does the seed matter."""
        return self.method == "sampling"

    def seeded(self) -> Decoding:
        """These choices with a seed for sampling: the one given, else a fresh one drawn here, so that the
        answer can be shown with the seed that reproduces it. Greedy and beam search need none."""
        if not self.samples or self.seed is not None:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(int(validate.BOUNDS["vc_seed"].high) + 1))

    def generate_kwargs(self) -> dict[str, Any]:
        """The arguments of ``model.generate`` for these choices."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.samples:
            # top_k=0 switches off transformers' default top-k, so temperature and top-p alone decide.
            return {
                **kwargs,
                "do_sample": True,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": 0,
            }
        if self.method == "beam search" and self.num_beams > 1:
            return {**kwargs, "do_sample": False, "num_beams": self.num_beams, "early_stopping": True}
        return {**kwargs, "do_sample": False, "num_beams": 1}


@dataclass
class Prepared:
    """One generate call, ready to run: what :func:`prepare_caption` or :func:`prepare_chat` made.

    ``prompt`` is the exact text given to the processor ("" for a caption: the image alone); ``inputs``
    holds the processor's tensors on the CPU (``pixel_values``, ``input_ids`` with one ``<image>`` token
    per Q-Former query, ``attention_mask``).
    """

    task: str  # "caption" or "chat"
    prompt: str
    inputs: Any
    generate_kwargs: dict[str, Any]
    context: int
    history: list[Turn] = field(default_factory=list)  # the turns the prompt kept
    dropped: int = 0  # the oldest turns left out so the prompt fits the context
    image_size: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)
    seed: int | None = None  # sampling: torch's generator is seeded with it just before generating

    @property
    def prompt_tokens(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


def _model_size(vc: models.VisionChatModel) -> tuple[int, int]:
    """(width, height) the processor resizes images to."""
    size = vc.processor.image_processor.size
    return int(size["width"]), int(size["height"])


def _processor_inputs(vc: models.VisionChatModel, image: Image.Image, prompt: str) -> Any:
    return vc.processor(images=image, text=prompt, return_tensors="pt")


def _title(vc: models.VisionChatModel) -> str:
    return catalog.entry(vc.model_id).title


def prepare_caption(vc: models.VisionChatModel, image: Any, max_new_tokens: int = CAPTION_TOKENS) -> Prepared:
    """The book's captioning: the image alone, greedy, ``max_new_tokens`` (20) new tokens."""
    opened = open_for_model(image)
    decoding = Decoding(max_new_tokens=max_new_tokens)
    # text="" rather than the book's image alone: the processor then writes the <image> tokens and BOS that
    # generate would add itself, so the output's prompt part has a known length and the panel can show it.
    inputs = _processor_inputs(vc, opened.image, "")
    return Prepared(
        "caption",
        "",
        inputs,
        decoding.generate_kwargs(),
        vc.context,
        image_size=opened.image.size,
        notes=[*opened.notes, *resize_notes(opened.image.size, _model_size(vc))],
    )


@dataclass(frozen=True)
class CaptionRequest:
    """One caption, asked for: the image opened and checked in the asker's own request (a bad file is
    refused before it waits) and the model it is for. Requests with the same :attr:`batch_key` share one
    ``generate`` (:func:`caption_batch`): a class captioning at once costs little more than one caption.
    """

    image: OpenedImage
    model: str = DEFAULT_MODEL
    path: str | None = None
    quantization: str = "auto"
    max_new_tokens: int = CAPTION_TOKENS

    @classmethod
    def prepare(
        cls,
        image: Any,
        model: str = DEFAULT_MODEL,
        path: str | Path | None = None,
        quantization: str = "auto",
        max_new_tokens: int = CAPTION_TOKENS,
    ) -> CaptionRequest:
        """Open ``image`` (see :func:`open_for_model`; raises its errors) for a caption by ``model``."""
        return cls(open_for_model(image), model, str(path) if path else None, quantization, max_new_tokens)

    @property
    def batch_key(self) -> tuple[str, str, str | None, str, int]:
        return ("caption", self.model, self.path, self.quantization, self.max_new_tokens)


@dataclass
class Caption:
    """A caption and what the panel shows beside it: the call as the model received it, and the model."""

    text: str
    prepared: Prepared
    model: models.VisionChatModel


@isolated
def caption_batch(requests: list[CaptionRequest]) -> list[Caption]:
    """Caption several images (same :attr:`CaptionRequest.batch_key`) with one ``generate`` call.

    The model is leased here, in the model queue's turn, so that it loads there on first use.
    """
    first = requests[0]
    with models.vision_chat_model(first.model, first.path, quantization=first.quantization) as vc:
        prepared = [prepare_caption(vc, r.image, r.max_new_tokens) for r in requests]
        texts = generate_texts(vc, prepared)
    return [Caption(text, p, vc) for text, p in zip(texts, prepared, strict=True)]


def fit_history(
    history: Sequence[Turn], question: str, count_tokens: Callable[[str], int], budget: int
) -> tuple[list[Turn], int]:
    """Keep the most recent turns whose prompt fits ``budget`` tokens.

    Args:
        count_tokens: ``prompt -> tokens`` as the model will read it.

    Returns:
        The kept turns and how many of the oldest were dropped.

    Raises:
        PromptTooLong: the question alone does not fit.
    """
    turns = list(history)
    if count_tokens(build_prompt([], question)) > budget:
        raise PromptTooLong(f"the question alone takes more than {budget} tokens")
    # The prompt grows with every kept turn, so the fewest dropped turns that fit can be bisected.
    low, high = 0, len(turns)  # dropping `high` turns fits; find the smallest such number
    while low < high:
        middle = (low + high) // 2
        if count_tokens(build_prompt(turns[middle:], question)) <= budget:
            high = middle
        else:
            low = middle + 1
    return turns[low:], low


def prepare_chat(
    vc: models.VisionChatModel,
    image: Any,
    history: Sequence[Turn],
    question: str,
    decoding: Decoding | None = None,
) -> Prepared:
    """Build the book's memory prompt for ``question`` and run the processor.

    When the prompt, the image's query tokens and ``max_new_tokens`` would not fit the language model's
    context, the oldest turns are left out (``Prepared.dropped`` says how many).

    Raises:
        NoImage, lab.images.BadImage, EmptyQuestion, QuestionTooLong: bad input.
        PromptTooLong: the question does not fit even alone.
    """
    decoding = decoding or Decoding()
    question = check_question(question)
    turns = check_history(history)
    opened = open_for_model(image)
    older = max(0, len(turns) - MAX_HISTORY_TURNS)
    tokenizer = vc.processor.tokenizer

    def count_tokens(prompt: str) -> int:  # as the processor will write it: query tokens, then the text
        return vc.query_tokens + len(tokenizer(prompt, verbose=False)["input_ids"])

    # A decoder (OPT) writes its answer into the same context; an encoder-decoder (T5) does not.
    budget = vc.context - (decoding.max_new_tokens if vc.decoder_only else 0)
    try:
        kept, dropped = fit_history(turns[older:], question, count_tokens, budget)
    except PromptTooLong:
        alone = count_tokens(build_prompt([], question))
        new = f" plus {decoding.max_new_tokens} new tokens" if vc.decoder_only else ""
        raise PromptTooLong(
            f"The question takes {alone} tokens with the image's {vc.query_tokens} query tokens{new}: more "
            f"than {_title(vc)}'s context of {vc.context} tokens. Shorten the question"
            + (" or lower max new tokens." if vc.decoder_only else ".")
        ) from None
    prompt = build_prompt(kept, question)
    notes = [*opened.notes, *resize_notes(opened.image.size, _model_size(vc))]
    if older + dropped:
        notes.append(dropped_message(older + dropped, _title(vc), vc.context))
    return Prepared(
        "chat",
        prompt,
        _processor_inputs(vc, opened.image, prompt),
        decoding.generate_kwargs(),
        vc.context,
        history=kept,
        dropped=older + dropped,
        image_size=opened.image.size,
        notes=notes,
        seed=decoding.seed if decoding.samples else None,
    )


def dropped_message(dropped: int, title: str, context: int) -> str:
    turns = "turn was" if dropped == 1 else f"{dropped} turns were"
    return (
        f"The conversation no longer fits {title}'s context of {context:,} tokens: the oldest {turns} left "
        "out of the prompt, so the model no longer remembers them."
    )


# -- forward -------------------------------------------------------------------------------------


def _on_device(vc: models.VisionChatModel, prepared: Prepared) -> dict[str, Any]:
    inputs = {name: tensor.to(vc.device) for name, tensor in prepared.inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(vc.dtype)
    return inputs


def _decode(vc: models.VisionChatModel, prepared: Prepared, row: Any) -> str:
    """One row of ``generate``'s output as text. A decoder's output repeats the prompt; an
    encoder-decoder's holds only the answer."""
    new = row[prepared.prompt_tokens :] if vc.decoder_only else row
    return vc.processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def _seed(prepared: Prepared) -> None:
    """Seed torch's generator (the CPU's and every GPU's) for a sampled answer, just before generating:
    nothing else draws from it while the model's turn is held, so the same seed draws the same tokens."""
    if prepared.seed is not None:
        import torch

        torch.manual_seed(prepared.seed)


def _what(vc: models.VisionChatModel, prepared: Prepared, *_: Any, **__: Any) -> str:
    return f"{_title(vc)} was writing {'a caption' if prepared.task == 'caption' else 'an answer'}"


@forward(_what, duration=120)
def generate_text(vc: models.VisionChatModel, prepared: Prepared) -> str:
    """Run the model once and return the whole text (the book's ``generate`` then ``batch_decode``).

    Raises:
        lab.cache.OutOfMemory: the GPU ran out of memory; the next call can proceed.
    """
    inputs = _on_device(vc, prepared)
    _seed(prepared)
    output = vc.model.generate(**inputs, **prepared.generate_kwargs)
    return _decode(vc, prepared, output[0])


def _what_many(vc: models.VisionChatModel, prepared: Sequence[Prepared]) -> str:
    many = f"{len(prepared)} captions at once" if len(prepared) > 1 else "a caption"
    return f"{_title(vc)} was writing {many}"


@forward(_what_many, duration=120)
def generate_texts(vc: models.VisionChatModel, prepared: Sequence[Prepared]) -> list[str]:
    """:func:`generate_text` for several calls in one ``generate``: the same prompt length and
    generation settings for all (captions: the image alone, greedy), so no row needs padding and each
    row is the text it would get alone.

    Raises:
        ValueError: the calls differ in prompt length or generation settings.
        lab.cache.OutOfMemory: the GPU ran out of memory; the next call can proceed.
    """
    import torch

    first = prepared[0]
    if any(p.seed is not None for p in prepared):  # a seed draws one answer's tokens, alone
        raise ValueError("sampled answers with a seed are generated one at a time")
    shapes = {(p.prompt_tokens, repr(sorted(p.generate_kwargs.items()))) for p in prepared}
    if len(shapes) > 1:
        raise ValueError("a batch of generate calls needs one prompt length and one set of settings")
    one = [_on_device(vc, p) for p in prepared]
    inputs = {name: torch.cat([each[name] for each in one]) for name in one[0]}  # (B, ...)
    output = vc.model.generate(**inputs, **first.generate_kwargs)  # (B, prompt + new) or (B, new)
    return [_decode(vc, p, row) for p, row in zip(prepared, output, strict=True)]


@forward(_what, duration=120)
def generate_stream(
    vc: models.VisionChatModel, prepared: Prepared, stop: threading.Event | None = None
) -> Iterator[str]:
    """Run the model and yield the text so far each time it grows (whitespace stripped, as the book does).

    Generation runs in a thread that feeds transformers' ``TextIteratorStreamer``. Closing the iterator,
    or setting ``stop``, ends generation at the next token; the thread is joined before this returns, so
    no model call outlives its request. Beam search cannot stream (the best beam is only known at the
    end): it yields its whole answer once.

    Raises:
        lab.cache.OutOfMemory: the GPU ran out of memory; the next call can proceed.
    """
    if prepared.generate_kwargs.get("num_beams", 1) > 1:
        yield generate_text(vc, prepared)
        return
    shown = None
    inputs = _on_device(vc, prepared)
    _seed(prepared)  # TokenStream starts generating at once, in its thread, from torch's global generator
    with TokenStream(
        vc.model,
        vc.processor.tokenizer,
        stop=stop,
        name=vc.model_id,
        **inputs,
        **prepared.generate_kwargs,
    ) as stream:
        for text in stream.texts():
            if text.strip() and text.strip() != shown:
                shown = text.strip()
                yield shown
    if shown is None:  # nothing generated (an end-of-text token first): still answer, with nothing
        yield ""


# -- present -------------------------------------------------------------------------------------


@dataclass
class UnderTheHood:
    """What the model really received for one call."""

    image: Image.Image  # the processor's pixel values turned back into a picture (224×224 for BLIP-2)
    original_size: tuple[int, int]
    tokens: list[str]  # the prompt's tokens as the processor's tokenizer wrote them, one string each
    ids: list[int]
    special: list[bool]
    query_tokens: int  # Q-Former outputs that replace the <image> tokens in the language model's input
    context: int

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def under_the_hood(vc: models.VisionChatModel, prepared: Prepared) -> UnderTheHood:
    """Undo the processor's normalisation and split the prompt into tokens, to show what the model saw."""
    import numpy as np
    from PIL import Image

    processor = vc.processor.image_processor
    pixels = prepared.inputs["pixel_values"][0].float().numpy()  # (3, H, W), normalised
    mean = np.asarray(processor.image_mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(processor.image_std, dtype=np.float32).reshape(3, 1, 1)
    rgb = np.clip((pixels * std + mean) * 255, 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
    tokenizer = vc.processor.tokenizer
    ids = [int(i) for i in prepared.inputs["input_ids"][0]]
    special_ids = {*tokenizer.all_special_ids, int(vc.model.config.image_token_id)}
    return UnderTheHood(
        image=Image.fromarray(rgb),
        original_size=prepared.image_size,
        tokens=[tokenizer.decode([i]) for i in ids],
        ids=ids,
        special=[i in special_ids for i in ids],
        query_tokens=vc.query_tokens,
        context=vc.context,
    )


# -- on a serving engine (vLLM) --------------------------------------------------------------------
#
# vLLM serves BLIP-2 behind the OpenAI chat API; the image travels as a data URL in an ``image_url`` part
# and the text part is the book's prompt, written into the model's input by the chat template of
# ``deploy/blip2-chat-template.jinja`` (BLIP-2 has none of its own). llama.cpp cannot serve BLIP-2, so this
# path is documented and was checked on vLLM only. Beam search is not part of the OpenAI API: it runs in
# process. The engine refuses a prompt past the model's context with its own message (no turns dropped).


def on_engine(model: str, path: str | Path | None = None, decoding: Decoding | None = None) -> bool:
    """True when a serving engine answers for ``model`` (a Hub id, not a local folder) with this decoding."""
    beams = decoding is not None and decoding.method == "beam search" and decoding.num_beams > 1
    return not path and not beams and engine.serves(model)


def _data_url(image: Image.Image) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def engine_messages(image: Image.Image, prompt: str) -> list[dict[str, Any]]:
    """One user message: the image as an OpenAI ``image_url`` part, then the prompt ("" for a caption)."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": _data_url(image)}}]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}]


def _engine_sampling(decoding: Decoding) -> dict[str, Any]:
    fields: dict[str, Any] = {"temperature": 0.0}
    if decoding.samples:
        fields = {"temperature": decoding.temperature, "top_p": decoding.top_p}
        if decoding.seed is not None:
            fields["seed"] = decoding.seed  # vLLM seeds the request with it: its answer repeats (its own)
    if decoding.repetition_penalty != 1.0:
        fields["repetition_penalty"] = decoding.repetition_penalty  # vLLM's field, sent as it is
    return fields


def engine_caption(image: Any, model: str = DEFAULT_MODEL, max_new_tokens: int = CAPTION_TOKENS) -> str:
    """The book's caption (the image alone, greedy) written by the serving engine."""
    opened = open_for_model(image)
    tokens = Decoding(max_new_tokens=max_new_tokens).max_new_tokens
    return engine.chat_text(model, engine_messages(opened.image, ""), tokens).strip()


def engine_answer_stream(
    image: Any,
    history: Sequence[Turn],
    question: str,
    model: str = DEFAULT_MODEL,
    decoding: Decoding | None = None,
) -> Iterator[str]:
    """The answer to the book's memory prompt, growing, written by the serving engine.

    Closing the iterator closes the request, and the engine stops generating it.
    """
    decoding = decoding or Decoding()
    prompt = build_prompt(check_history(history), check_question(question))
    messages = engine_messages(open_for_model(image).image, prompt)
    pieces = engine.chat_stream(model, messages, decoding.max_new_tokens, **_engine_sampling(decoding))
    with contextlib.closing(engine.growing(pieces)) as texts:
        for text in texts:
            yield text.strip()


# -- the book's calls, for a notebook -------------------------------------------------------------


def _leased(
    model: str | models.VisionChatModel, path: str | Path | None, quantization: str
) -> contextlib.AbstractContextManager[models.VisionChatModel]:
    if isinstance(model, models.VisionChatModel):
        return contextlib.nullcontext(model)
    return models.vision_chat_model(model, path, quantization=quantization)


def caption(
    image: Any,
    model: str | models.VisionChatModel = DEFAULT_MODEL,
    max_new_tokens: int = CAPTION_TOKENS,
    *,
    path: str | Path | None = None,
    quantization: str = "auto",
) -> str:
    """Caption ``image`` as the book does (the image alone, greedy, 20 new tokens).

    Args:
        image: a path, the file's bytes, a PIL image or a numpy array.
        model: a Hub id (loaded through the lab's cache) or a leased :class:`lab.models.VisionChatModel`.
        path: a local folder holding ``model``.
        quantization: see :func:`lab.models.vision_chat_plan`.
    """
    opened = open_for_model(image)
    if isinstance(model, str) and on_engine(model, path):
        return engine_caption(opened, model, max_new_tokens)
    with _leased(model, path, quantization) as vc:
        return generate_text(vc, prepare_caption(vc, opened, max_new_tokens))


def answer(
    image: Any,
    history: Sequence[Turn],
    question: str,
    model: str | models.VisionChatModel = DEFAULT_MODEL,
    stream: bool = False,
    *,
    path: str | Path | None = None,
    quantization: str = "auto",
    stop: threading.Event | None = None,
    **decoding: Any,
) -> str | Iterator[str]:
    """Answer ``question`` about ``image``, remembering ``history`` as the book's chat does.

    Args:
        history: earlier (question, answer) pairs; the oldest are dropped if the prompt would not fit.
        stream: return an iterator of growing strings instead of the final string.
        stop: with ``stream``, set this event to end generation early.
        **decoding: :class:`Decoding` fields: ``method``, ``num_beams``, ``temperature``, ``top_p``,
            ``max_new_tokens``, ``repetition_penalty``, ``seed`` (sampling: the same seed, the same answer).

    Raises:
        ValueError (NoImage, BadImage, EmptyQuestion, QuestionTooLong, PromptTooLong): bad input, raised
            at the call even when streaming.
    """
    choice = Decoding(**decoding)
    question = check_question(question)
    turns = check_history(history)
    opened = open_for_model(image)
    if isinstance(model, str) and on_engine(model, path, choice):
        texts = engine_answer_stream(opened, turns, question, model, choice)
        return texts if stream else (list(texts) or [""])[-1]
    if not stream:
        with _leased(model, path, quantization) as vc:
            return generate_text(vc, prepare_chat(vc, opened, turns, question, choice))

    def growing() -> Iterator[str]:
        with _leased(model, path, quantization) as vc:
            yield from generate_stream(vc, prepare_chat(vc, opened, turns, question, choice), stop)

    return growing()
