"""Tab 5, chapter 9: caption an image and chat about it with BLIP-2.

Layout and wiring only: the model runs in :mod:`lab.vision_chat`, the page's text and pictures come from
:mod:`lab.vision_chat_view`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from lab import engine, export, models, paths, snippets, validate, vision_chat
from lab import vision_chat_view as view
from lab.config import Settings
from lab.images import BadImage
from tabs import access
from tabs import links as page_links
from tabs.common import ImageUpload, in_batch, model_choices, on, slider, warn
from tabs.export import code_panel

INTRO = """
## Chapter 9 · BLIP-2: chat about an image
BLIP-2 joins a frozen image encoder (a ViT) to a frozen language model (OPT-2.7b) with a small
**Q-Former**, which turns the image into 32 *query tokens* that the language model reads before your text.
Pick an image, press **Caption** for the book's caption, then ask questions. The model has no memory of
its own: each earlier turn is written back into the prompt as `Question: … Answer: ….` (tick *Show the
prompt* to see it), and the panel *Under the hood* shows what the model receives.
"""

BOOK_IMAGES = paths.BOOK_IMAGES
EXAMPLES = list(paths.BOOK_IMAGE_NAMES)
PRECISIONS = [
    ("auto", "auto"),
    ("16-bit (32-bit on a CPU)", "none"),
    ("8-bit (bitsandbytes)", "8-bit"),
    ("4-bit NF4 (bitsandbytes)", "4-bit"),
]


class _Busy:
    """Which sessions have an answer on its way, so a second request from the same reader is refused.

    The page disables Send while an answer streams; this catches what still gets through (a second
    Enter, Regenerate) with a message instead of a second answer mixed into the first.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: set[str] = set()

    def begin(self, session: str) -> None:
        with self._lock:
            if session in self._sessions:
                raise gr.Error(
                    "An answer is still on its way for you: wait for it, or press Stop first.", duration=8
                )
            self._sessions.add(session)

    def end(self, session: str) -> None:
        with self._lock:
            self._sessions.discard(session)


def _hood(vc: Any, prepared: vision_chat.Prepared) -> tuple[Any, str, str]:
    """The under-the-hood panel's values, its picture (the student's image, squashed) written as a result
    file: served to the student's login only, not under an address anyone could fetch."""
    image, info, tokens = view.under_the_hood(vc, prepared)
    return export.picture(image, "blip2-seen-by-the-encoder"), info, tokens


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def _controls(busy: bool) -> tuple[Any, ...]:
    """The question box, Send, Stop and Regenerate while an answer streams (``busy``) or not."""
    box, send, regenerate = (gr.update(interactive=not busy) for _ in range(3))
    return box, send, gr.update(visible=busy), regenerate


# What the page address keeps of a conversation: the book image's name and the questions (the answers are
# computed again, not read from the address: a link cannot put words in the model's mouth).
URL_SYNC_JS = """
(image, chat) => {
  const text = (content) => typeof content === "string" ? content
    : Array.isArray(content) ? content.map((part) => part.text || "").join("")
    : (content && content.text) || "";
  const questions = (chat || []).filter((m) => m.role === "user").map((m) => text(m.content));
  if (!questions.length) return;  // a new image clears the chat: the address keeps the last conversation
  window.labLinks && window.labLinks.write("vision-chat", ["vc.image", "vc.q"],
    [image && image.orig_name, questions.slice(-5)]);
}
"""


def _wire_link(
    demo: gr.Blocks,
    image: gr.Image,
    image_changed: Any,
    chatbot: gr.Chatbot,
    history: gr.State,
    status_inputs: list[Any],
    decoding_inputs: list[Any],
    lease: Callable[..., Any],
) -> None:
    """A link's book image opens as any new image does; its questions are then asked again, in order.

    The questions wait for the new image's event (which starts a fresh conversation), so they are asked
    after it, not wiped by it."""
    book_image = (image, lambda name: gr.update(value=str(BOOK_IMAGES / name)))
    linked = page_links.share(demo, "vision-chat", {"vc.image": book_image}, extra=("vc.q",))
    replay = gr.State(None)

    def pending(link: dict[str, Any] | None) -> Any:
        """Inputs: the last link. Outputs: the questions to ask again (unchanged when already asked)."""
        return link if link and link.get("vc.q") else gr.skip()

    def ask_again(values: dict[Any, Any]) -> Iterator[tuple[Any, Any]]:
        """Inputs: the link, image, model form, decoding (by component). Outputs: chat, history."""
        link = values[replay]
        choice = vision_chat.Decoding(*(values[c] for c in decoding_inputs))
        model, folder_path, precision = (values[c] for c in status_inputs)
        turns: list[list[str]] = []
        with lease(model, folder_path, precision) as vc:
            for question in link["vc.q"]:
                question = vision_chat.check_question(question)
                earlier = [(q, a) for q, a in turns]
                prepared = vision_chat.prepare_chat(vc, values[image], earlier, question, choice)
                turns.append([question, vision_chat.generate_text(vc, prepared)])
                yield view.messages(turns), turns

    on(image_changed.then, pending, linked.state, replay)
    form = {replay, image, *status_inputs, *decoding_inputs}
    on(page_links.ready(replay), ask_again, form, [chatbot, history], gpu=True)
    on(chatbot.change, None, [image, chatbot], js=URL_SYNC_JS)


def _answer_outputs(
    conversation: list[dict[str, Any]], turns: list[list[str]], text: str, stream: Iterator[str]
) -> Iterator[tuple[Any, ...]]:
    """The chat and the history after every piece of a streamed answer (in process or from the engine),
    then once more with the whole answer. The history follows every piece, so Stop keeps the answer shown
    so far; closing this generator closes ``stream``."""
    answer = ""
    with contextlib.closing(stream):
        for answer in stream:
            shown = [*conversation, {"role": "assistant", "content": answer or view.WAITING}]
            yield shown, [*turns, [text, answer]], *[gr.skip()] * 6
    whole = [*conversation, {"role": "assistant", "content": answer}]
    yield whole, [*turns, [text, answer]], *[gr.skip()] * 6


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the BLIP-2 tab inside ``demo`` (call it within ``with demo:`` and a ``gr.Tab``)."""
    busy = _Busy()
    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        model_id = gr.Dropdown(
            choices=model_choices(vision_chat.MODELS),
            value=vision_chat.DEFAULT_MODEL,
            label="Model",
            info="The book's OPT-2.7b, or Flan-T5-XL through the same code",
            allow_custom_value=not settings.classroom,
            scale=3,
            elem_id="vc-model",
        )
        folder = gr.Textbox(
            value="",  # a default, so the API's folder argument is optional
            label="Local folder (optional)",
            placeholder="a folder holding the model, e.g. ~/lab-models/Salesforce--blip2-opt-2.7b",
            scale=3,
            elem_id="vc-folder",
            interactive=not settings.classroom,
            info="This classroom server only loads its own models."
            if settings.classroom
            else "Used instead of the download; press Enter to check it",
        )
        quantization = gr.Dropdown(
            choices=PRECISIONS,
            value="auto",
            label="Precision",
            info="auto: 16-bit on a GPU, 8- or 4-bit if it is short of memory, 32-bit on a CPU",
            scale=2,
            elem_id="vc-precision",
        )
    model_status = gr.Markdown(elem_id="vc-model-status")
    with gr.Row():
        with gr.Column(scale=2):
            image = ImageUpload(
                sources=["upload", "webcam", "clipboard"],
                type="filepath",
                label="Image",
                height=300,
                elem_id="vc-image",
            )
            gr.Examples(
                examples=[[str(BOOK_IMAGES / name)] for name in EXAMPLES],
                inputs=[image],
                label="The book's images (a new image starts a new conversation)",
                elem_id="vc-examples",
            )
            caption_btn = gr.Button("Caption", variant="primary", elem_id="vc-caption")
            caption_box = gr.Textbox(
                label="Caption (the image alone, greedy, 20 new tokens as in the book)",
                interactive=False,
                elem_id="vc-caption-text",
                buttons=["copy"],
            )
            image_notes = gr.Markdown(elem_id="vc-image-notes")
            caption_panel = code_panel("vc-caption")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(
                label="Chat about the image",
                height=340,
                render_markdown=False,
                feedback_options=None,
                placeholder="Ask a question about the image below.",
                elem_id="vc-chatbot",
            )
            notice = gr.Markdown(elem_id="vc-notice")
            chat_panel = code_panel("vc-chat")
            with gr.Row(equal_height=True):
                question = gr.Textbox(
                    placeholder="e.g. Write down what you see in this picture.",
                    show_label=False,
                    max_lines=4,
                    scale=5,
                    elem_id="vc-question",
                )
                send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="vc-send")
                stop = gr.Button(
                    "Stop", variant="stop", scale=1, min_width=80, visible=False, elem_id="vc-stop"
                )
            with gr.Row():
                regenerate = gr.Button("Regenerate", size="sm", elem_id="vc-regenerate")
                clear = gr.Button("Clear", size="sm", elem_id="vc-clear")
                show_prompt = gr.Checkbox(label="Show the prompt", value=False, elem_id="vc-show-prompt")
            prompt_box = gr.Textbox(
                label="The exact prompt given to the processor (empty for a caption: the image alone)",
                visible=False,
                interactive=False,
                lines=3,
                buttons=["copy"],
                elem_id="vc-prompt",
            )
    with gr.Accordion("Decoding: how each next token is chosen", open=False):
        with gr.Row():
            method = gr.Radio(list(vision_chat.METHODS), value="greedy", label="Method", elem_id="vc-method")
            max_new_tokens = slider(
                "vc_max_new_tokens",
                "Max new tokens",
                info="The book uses 30 to 100.",
                elem_id="vc-max-new-tokens",
            )
            repetition_penalty = slider("vc_repetition_penalty", "Repetition penalty", info="1 = none")
        with gr.Row():
            num_beams = slider("vc_num_beams", "Beams", visible=False)
            temperature = slider("vc_temperature", "Temperature", visible=False)
            top_p = slider("vc_top_p", "Top-p", visible=False)
            seed_bound = validate.BOUNDS["vc_seed"]
            seed = gr.Number(
                value=None,
                label="Seed",
                info="The same seed draws the same answer; empty: a new one each time, shown with the answer",
                precision=0,
                minimum=seed_bound.low,
                maximum=seed_bound.high,
                visible=False,
                elem_id="vc-seed",
            )
    with gr.Accordion("Under the hood: what the model receives", open=False):
        with gr.Row():
            hood_image = gr.Image(
                label="What the vision encoder sees",
                alt_text="The image as the vision encoder receives it, squashed to its input size",
                type="pil",
                interactive=False,
                height=240,
                scale=1,
                elem_id="vc-hood-image",
            )
            hood_info = gr.Markdown(view.HOOD_EMPTY, elem_id="vc-hood-info")
        hood_tokens = gr.HTML(elem_id="vc-hood-tokens")
    history = access.session_state([], settings)  # [[question, answer], ...]: this reader's conversation
    # The panel's values for the last chat turn. A streaming event does not update it directly: Gradio 6
    # loses an image sent by a generator to a closed accordion, so it is shown once the stream ends.
    hood_state = access.session_state(None, settings)
    asked = gr.State("")  # the question on its way to the model
    seed_used = gr.State(None)  # the seed the last sampled answer was drawn with (None: not sampled)

    # Invisible, for gradio_client only: the API of the tab is /caption and /chat.
    with gr.Row(visible=False):
        api_caption_btn = gr.Button("caption")
        api_caption_out = gr.Textbox(label="caption")
        api_chat_btn = gr.Button("chat")
        api_history = gr.JSON(value=[], label="history")
        api_answer_out = gr.Textbox(label="answer")

    decoding_inputs = [method, num_beams, temperature, top_p, max_new_tokens, repetition_penalty, seed]
    status_inputs = [model_id, folder, quantization]

    def on_engine(model: str, path: str | None, choice: Any = None) -> str | None:
        """The model id when the serving engine answers for it (LAB_GENERATION_URL), else None."""
        model, path = view.chosen_model(model, path, classroom=settings.classroom)
        return model if vision_chat.on_engine(model, path, choice) else None

    @contextlib.contextmanager
    def lease(model: str, path: str | None, precision: str) -> Iterator[Any]:
        """The model, in process; with an engine configured these events are off the GPU queue, so
        in-process answers take turns (:func:`lab.engine.in_process_turn`)."""
        model, path = view.chosen_model(model, path, classroom=settings.classroom)
        with engine.in_process_turn(), models.vision_chat_model(model, path, quantization=precision) as vc:
            yield vc

    def captioned(path: Any, model: str, folder: str | None, precision: str) -> vision_chat.Caption:
        """A caption in process, its generate call shared with other students' captions: the image is
        opened here, the model loads and writes in the model queue (:func:`tabs.common.in_batch`)."""
        model, folder = view.chosen_model(model, folder, classroom=settings.classroom)
        request = vision_chat.CaptionRequest.prepare(path, model, folder, precision)
        return in_batch("caption", request.batch_key, request, vision_chat.caption_batch)

    # -- CPU events ------------------------------------------------------------------------------

    def model_status_view(model: str, path: str | None, precision: str) -> str:
        """Inputs: model, folder, precision. Outputs: where the model loads from (markdown)."""
        return view.model_status(model, path, precision, classroom=settings.classroom)

    def new_image(path: str | None) -> tuple[Any, ...]:
        """Inputs: the image. Outputs: a fresh conversation and panel, notes on the image, no hood state.

        A new image starts a new conversation; the notes say what the processor will do to it."""
        cleared = ([], [], "", "", "", None, view.HOOD_EMPTY, "")
        if path is None:
            return (*cleared, "", None)
        try:
            opened = vision_chat.open_for_model(path)
        except BadImage as error:
            warn(str(error))
            return (*cleared, view.notes_markdown([str(error)]), None)
        return (
            *cleared,
            view.notes_markdown(opened.notes + vision_chat.resize_notes(opened.image.size)),
            None,
        )

    def start_turn(text: str, path: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Inputs: question, image. Outputs: the question on its way, the controls locked."""
        if path is None:
            raise gr.Error(vision_chat.NO_IMAGE)
        text = vision_chat.check_question(text)
        busy.begin(_session(request))
        return text, *_controls(busy=True)

    def start_regenerate(turns: list[list[str]], path: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Inputs: history, image. Outputs: the last question again, the controls locked."""
        if not turns:
            raise gr.Error("There is no answer to regenerate yet: ask a question first.")
        if path is None:
            raise gr.Error(vision_chat.NO_IMAGE)
        busy.begin(_session(request))
        return turns[-1][0], *_controls(busy=True)

    def end_turn(request: gr.Request) -> tuple[Any, ...]:
        """Inputs: none. Outputs: the controls unlocked."""
        busy.end(_session(request))
        return _controls(busy=False)

    def show_hood(values: tuple[Any, str, str] | None) -> tuple[Any, ...]:
        """Inputs: the last turn's panel values. Outputs: the panel (image, explanation, tokens)."""
        return tuple(values) if values else (gr.skip(),) * 3

    def clear_chat(request: gr.Request) -> tuple[Any, ...]:
        """Inputs: none. Outputs: empty history, chat, notice and prompt; the controls unlocked."""
        return [], [], "", "", *end_turn(request)

    # -- GPU events ------------------------------------------------------------------------------

    def caption_view(path: str | None, model: str, folder_path: str, precision: str) -> tuple[Any, ...]:
        """Inputs: image, model, folder, precision. Outputs: caption, prompt, panel, status, image notes,
        code, downloads."""
        served = on_engine(model, folder_path)
        if served:
            text = vision_chat.engine_caption(path, served)
            files = export.vision_chat_files({"model": model, "engine": served, "caption": text})
            return text, "", *view.engine_hood(), view.engine_status(served), gr.skip(), gr.skip(), files
        done = captioned(path, model, folder_path, precision)
        text, prepared = done.text, done.prepared
        hood, status = _hood(done.model, prepared), view.loaded_status(done.model, folder_path)
        code = snippets.vision_chat(model, path, folder=folder_path or None, precision=precision)
        files = export.vision_chat_files({"model": model, "caption": text, "prompt": prepared.prompt})
        return text, prepared.prompt, *hood, status, view.notes_markdown(prepared.notes), code, files

    def chat_code(form: dict[Any, Any]) -> tuple[Any, Any]:
        """Inputs: image, history, model form, decoding, the seed used. Outputs: the last answer's code and
        downloads."""
        turns = [list(t) for t in form[history] or []]
        if not turns or not form[image]:
            return caption_panel.unchanged()
        *earlier, (question_text, answer) = turns
        choice = vision_chat.Decoding(*(form[c] for c in decoding_inputs))
        decoding = dataclasses.asdict(dataclasses.replace(choice, seed=form[seed_used]))
        code = snippets.vision_chat(
            form[model_id],
            form[image],
            folder=form[folder] or None,
            precision=form[quantization],
            history=earlier,
            question=question_text,
            decoding=decoding,
        )
        record = {"model": form[model_id], "history": turns, "answer": answer, "decoding": decoding}
        return code, export.vision_chat_files(record)

    def stream_turn(form: dict[Any, Any], again: bool) -> Iterator[tuple[Any, ...]]:
        """Stream one answer; ``again`` asks the last question again, without its answer. A sampled answer
        without a seed in the form gets a fresh one, shown with it and kept for its code."""
        choice = vision_chat.Decoding(*(form[c] for c in decoding_inputs)).seeded()
        turns = [list(t) for t in form[history] or []]
        if again:
            turns = turns[:-1]
        text, folder_path = form[asked], form[folder]
        served = on_engine(form[model_id], folder_path, choice)
        if served:
            yield from engine_turn(served, form[image], turns, text, choice, again)
            return
        with lease(form[model_id], folder_path, form[quantization]) as vc:
            prepared = vision_chat.prepare_chat(vc, form[image], [tuple(t) for t in turns], text, choice)
            conversation = [*view.messages(turns), {"role": "user", "content": text}]
            yield (
                [*conversation, {"role": "assistant", "content": view.WAITING}],
                turns,
                view.turn_notice(vc, prepared),
                prepared.prompt,
                _hood(vc, prepared),
                view.loaded_status(vc, folder_path),
                gr.skip() if again else gr.update(value=""),
                prepared.seed,
            )
            # Inside the lease: on Stop the stream ends its thread before the lease is returned.
            yield from _answer_outputs(conversation, turns, text, vision_chat.generate_stream(vc, prepared))

    def engine_turn(
        model: str, image_path: str, turns: list[list[str]], text: str, choice: Any, again: bool
    ) -> Iterator[tuple[Any, ...]]:
        """One answer from the serving engine, with the outputs of :func:`stream_turn`."""
        conversation = [*view.messages(turns), {"role": "user", "content": text}]
        prompt = vision_chat.build_prompt([tuple(t) for t in turns], text)
        waiting = [*conversation, {"role": "assistant", "content": view.WAITING}]
        status = view.engine_status(model)
        yield (
            waiting,
            turns,
            view.seed_notice(choice.seed),
            prompt,
            view.engine_hood(),
            status,
            gr.skip() if again else gr.update(value=""),
            choice.seed,
        )
        history_pairs = [tuple(t) for t in turns]
        stream = vision_chat.engine_answer_stream(image_path, history_pairs, text, model, choice)
        yield from _answer_outputs(conversation, turns, text, stream)

    def stream_answer(form: dict[Any, Any]) -> Iterator[tuple[Any, ...]]:
        """Inputs: image, question, history, model form, decoding. Outputs: chat, history, notice, prompt,
        panel values, status, question box, the seed used."""
        yield from stream_turn(form, again=False)

    def stream_regenerated(form: dict[Any, Any]) -> Iterator[tuple[Any, ...]]:
        """Inputs and outputs: those of :func:`stream_answer`; the last question is asked again."""
        yield from stream_turn(form, again=True)

    # The API's parameter names are these functions' own: keep them plain.
    def api_caption(image: str | None, model: str, folder: str, precision: str) -> str:
        """Inputs: image, model, folder, precision. Outputs: the caption."""
        served = on_engine(model, folder)
        if served:
            return vision_chat.engine_caption(image, served)
        return captioned(image, model, folder, precision).text

    def api_chat(
        image: str | None,
        question: str,
        history: Any,
        model: str,
        folder: str,
        precision: str,
        method: str,
        num_beams: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        repetition_penalty: float,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Inputs: image, question, history, model form, decoding (a sampled answer repeats for a seed).
        Outputs: the answer, as it grows."""
        choice = vision_chat.Decoding(
            method, num_beams, temperature, top_p, max_new_tokens, repetition_penalty, seed
        )
        served = on_engine(model, folder, choice)
        if served:
            yield from vision_chat.engine_answer_stream(image, history, question, served, choice)
            return
        with lease(model, folder, precision) as vc:
            prepared = vision_chat.prepare_chat(
                vc, image, vision_chat.check_history(history), question, choice
            )
            yield from vision_chat.generate_stream(vc, prepared)

    # -- wiring ----------------------------------------------------------------------------------

    for trigger in (model_id.change, folder.submit, folder.blur, quantization.change, demo.load):
        on(trigger, model_status_view, status_inputs, model_status)

    hood = [hood_image, hood_info, hood_tokens]
    new_outputs = [history, chatbot, caption_box, notice, prompt_box, *hood, image_notes, hood_state]
    image_changed = on(image.change, new_image, image, new_outputs)
    _wire_link(demo, image, image_changed, chatbot, history, status_inputs, decoding_inputs, lease)
    caption_outputs = [caption_box, prompt_box, *hood, model_status, image_notes, *caption_panel.outputs]
    caption_inputs = [image, *status_inputs]
    on(caption_btn.click, caption_view, caption_inputs, caption_outputs, generates=True, batched=True)

    controls = [question, send, stop, regenerate]
    stream_outputs = [chatbot, history, notice, prompt_box, hood_state, model_status, question, seed_used]
    stream_inputs = {image, asked, history, *status_inputs, *decoding_inputs}

    def chat_turn(trigger: Any, start: Callable[..., Any], start_inputs: list[Any], stream: Any) -> Any:
        """Check and lock the page (CPU), stream the answer (GPU), then unlock and fill the panel."""
        started = on(trigger, start, start_inputs, [asked, *controls])
        streaming = on(started.success, stream, stream_inputs, stream_outputs, generates=True)
        finished = on(streaming.then, end_turn, None, controls)
        on(finished.then, show_hood, hood_state, hood)
        code_inputs = {image, history, seed_used, *status_inputs, *decoding_inputs}
        on(finished.then, chat_code, code_inputs, chat_panel.outputs)
        return streaming

    streams = [
        chat_turn(send.click, start_turn, [question, image], stream_answer),
        chat_turn(question.submit, start_turn, [question, image], stream_answer),
        chat_turn(regenerate.click, start_regenerate, [history, image], stream_regenerated),
    ]
    stopped = on(stop.click, end_turn, None, controls, cancels=streams)
    on(stopped.then, show_hood, hood_state, hood)
    on(clear.click, clear_chat, None, [history, chatbot, notice, prompt_box, *controls], cancels=streams)

    on(show_prompt.change, lambda shown: gr.update(visible=shown), show_prompt, prompt_box)
    on(
        method.change,
        lambda m: (gr.update(visible=m == "beam search"), *[gr.update(visible=m == "sampling")] * 3),
        method,
        [num_beams, temperature, top_p, seed],
    )

    public = {"generates": True, "api_visibility": "public"}  # the tab's API: /caption and /chat
    on(
        api_caption_btn.click,
        api_caption,
        [image, *status_inputs],
        api_caption_out,
        api_name="caption",
        batched=True,
        **public,
    )
    api_inputs = [image, question, api_history, *status_inputs, *decoding_inputs]
    on(api_chat_btn.click, api_chat, api_inputs, api_answer_out, api_name="chat", **public)
