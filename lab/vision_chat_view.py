"""What the BLIP-2 chat shows (chapter 9): markdown, chat messages and the *under the hood* panel.

Pure functions of :mod:`lab.vision_chat`'s results, and the model form's one rule (:func:`chosen_model`):
no Gradio here, so a notebook can show them too.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from lab import catalog, models, render, tokens, vision_chat
from lab.catalog import ModelUnavailable
from lab.config import generation_engine
from lab.errors import InputError, LabError

if TYPE_CHECKING:
    from PIL import Image

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")
WAITING = "…"  # the assistant's message until its first token arrives
HOOD_EMPTY = "Caption the image or ask a question to see what the model receives."


def chosen_model(model: str | None, folder: str | None, *, classroom: bool = False) -> tuple[str, str | None]:
    """The model id and folder a form asks for (the default model if none).

    Raises:
        InputError: not a Hugging Face id, or, on a classroom server, a folder or an id outside the catalog.
    """
    model = (model or vision_chat.DEFAULT_MODEL).strip()
    folder = (folder or "").strip() or None
    if not HUB_ID.match(model):
        raise InputError(f"{model!r} is not a Hugging Face model id (owner/name).")
    if classroom and (folder or not catalog.is_known(model)):
        raise InputError(
            "This classroom server only loads the lab's catalog models, not other ids or folders."
        )
    return model, folder


def notes_markdown(notes: list[str] | tuple[str, ...]) -> str:
    """Warnings for the reader, one paragraph each."""
    return "\n\n".join(f"⚠ {html.escape(note)}" for note in notes)


def model_status(model: str | None, folder: str | None, precision: str, *, classroom: bool = False) -> str:
    """Markdown: where the model will load from, on which device in which precision, or why it cannot."""
    try:
        model, folder = chosen_model(model, folder, classroom=classroom)
        source = models.source_of(model, path=folder)
        plan = models.vision_chat_plan(model, folder, quantization=precision)
    except ModelUnavailable as error:
        command = catalog.fetch_command(error.model_id)
        message = html.escape(str(error)).replace(html.escape(command), f"`{command}`")
        return f"⚠ **Not available here.** {message} Or type the folder that holds it under *Local folder*."
    except LabError as error:
        return notes_markdown([str(error)])
    title = catalog.entry(model).title
    lines = [
        f"**{html.escape(title)}** loads from {html.escape(source.detail)} on first use and runs on "
        f"**{plan.placement.device}** in **{plan.precision}**."
    ]
    return "\n\n".join([*lines, notes_markdown(plan.notes)] if plan.notes else lines)


def loaded_status(vc: models.VisionChatModel, folder: str | None) -> str:
    """Markdown: the model that answered, where from, on which device and in which precision."""
    title = catalog.entry(vc.model_id).title
    origin = f" from `{html.escape(folder.strip())}`" if (folder or "").strip() else ""
    lines = [f"**{html.escape(title)}** is loaded{origin} on **{vc.device}** in **{vc.precision}**."]
    return "\n\n".join([*lines, notes_markdown(vc.notes)] if vc.notes else lines)


def engine_status(model: str) -> str:
    """Markdown: the serving engine that answers for ``model`` (``LAB_GENERATION_URL``)."""
    engine = generation_engine()
    where = html.escape(engine.url) if engine else "?"
    return f"**{html.escape(model)}** answers on the serving engine at `{where}`, not in this process."


def engine_hood() -> tuple[None, str, str]:
    """The panel's values when the engine answered: its processor ran there, so there is nothing to show."""
    return None, "The serving engine ran the processor and the model: the app never saw their inputs.", ""


def seed_notice(seed: int | None) -> str:
    """Markdown: the seed a sampled answer was drawn with, and how to draw it again (empty if none)."""
    if seed is None:
        return ""
    return f"Sampled with seed {seed}: put it in *Seed* (under Decoding) to draw this answer again."


def turn_notice(vc: models.VisionChatModel, prepared: vision_chat.Prepared) -> str:
    """Markdown: earlier turns left out of the prompt to fit the context, and the seed of a sampled answer
    (empty if neither)."""
    parts = [seed_notice(prepared.seed)]
    if prepared.dropped:
        title = catalog.entry(vc.model_id).title
        parts.append(notes_markdown([vision_chat.dropped_message(prepared.dropped, title, vc.context)]))
    return "\n\n".join(part for part in parts if part)


def messages(history: list[list[str]]) -> list[dict[str, str]]:
    """``[[question, answer], ...]`` as chat messages (``role``, ``content``)."""
    out = []
    for question, answer in history:
        out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return out


def under_the_hood(
    vc: models.VisionChatModel, prepared: vision_chat.Prepared
) -> tuple[Image.Image, str, str]:
    """The image the encoder sees, a short explanation (markdown), and the prompt's tokens (HTML)."""
    hood = vision_chat.under_the_hood(vc, prepared)
    (width, height), (to_w, to_h) = hood.original_size, hood.size
    title = catalog.entry(vc.model_id).title
    room = (
        f"; up to {prepared.generate_kwargs['max_new_tokens']} new tokens are written after it"
        if vc.decoder_only
        else ""
    )
    info = (
        f"The processor squashed the {width}×{height} image to **{to_w}×{to_h}** pixels (left, normalised "
        f"for the model and turned back into a picture here). The vision encoder reads it, and the "
        f"Q-Former hands **{hood.query_tokens} query tokens** to the language model: they take the places "
        f"of the {hood.query_tokens} `<image>` tokens at the start of the prompt below. The prompt is "
        f"**{len(hood.ids)} tokens** of {title}'s {hood.context:,}-token context{room}. "
        f"Model: `{html.escape(vc.model_id, quote=False)}` on {vc.device} in {vc.precision}."
    )
    what = "caption (image only)" if prepared.task == "caption" else "chat prompt"
    rendering = tokens.ChatRendering(
        name=f"Tokens of the {what}",
        text=prepared.prompt,
        tokens=hood.tokens,
        ids=hood.ids,
        special=hood.special,
    )
    picture = hood.image
    if picture.width < 224:  # a tiny test model's 32×32 input: enlarge it, keeping its pixels visible
        picture = picture.resize((224, 224 * picture.height // picture.width), resample=0)  # nearest
    return picture, info, render.chat_view(rendering, show_whitespace=True)
