"""Tab 1, chapter 2: one text, many tokenizers, side by side."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import gradio as gr

from lab import catalog, export, links, render, snippets, tokens, validate
from lab.config import Settings
from tabs import links as page_links
from tabs.common import CPU_EVENT, check_allowed, explained, model_choices, user_errors
from tabs.export import code_panel

INTRO = """
## Chapter 2 · Tokens
A language model never sees letters: a **tokenizer** first cuts the text into tokens from a fixed
vocabulary and hands the model their ids. Below, the book's sample text goes through the book's
tokenizers and some newer ones. Each colour is one token (the book's six colours, cycling); hover a token
for its id and, for byte pieces, the bytes and the character they belong to. Watch what each one does to
capital letters, the emoji and 鸟, code keywords, runs of spaces and tabs, newlines and digits.
"""

MAX_API_TOKENIZERS = 20  # tokenizers one /tokenize call may name
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")


def _stats_rows(results: list[tokens.Tokenization], text: str) -> list[list[Any]]:
    rows = []
    for r in results:
        if r.error:
            rows.append([r.name, None, None, None, "not available here", "", None, ""])
            continue
        rows.append(
            [
                r.name,
                len(r.ids),
                r.chars_per_token(text),
                r.vocab_size,
                r.method,
                " ".join(r.added_special),
                r.unknown,
                r.source,
            ]
        )
    return rows


STATS_HEADERS = [
    "tokenizer",
    "tokens",
    "chars/token",
    "vocab size",
    "method",
    "special added",
    "unknown",
    "source",
]


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the tokenizer tab inside ``demo`` (call it within ``with demo:`` and a ``gr.Tab``)."""
    sample = tokens.sample_text()
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(
                value=sample,
                lines=6,
                max_lines=20,
                label="Text",
                elem_id="tok-text",
                info=f"Up to {settings.max_text_chars:,} characters. "
                "The page address keeps the text and tokenizers: copy it to share this view.",
            )
        with gr.Column(scale=2):
            names = gr.CheckboxGroup(
                choices=model_choices(tokens.PRESET),
                value=list(tokens.PRESET),
                label="Tokenizers (the book's eight, then newer ones)",
                elem_id="tok-names",
            )
            with gr.Row():
                hub_id = gr.Textbox(
                    label="Add a tokenizer by Hugging Face id",
                    placeholder="e.g. bert-base-cased",
                    scale=3,
                    elem_id="tok-hub-id",
                )
                add = gr.Button("Add", scale=1, elem_id="tok-add")
            with gr.Row():
                show_ws = gr.Checkbox(value=True, label="Show whitespace (· space, → tab, ↵ newline)")
                show_ids = gr.Checkbox(value=False, label="Show token ids", elem_id="tok-show-ids")
            run = gr.Button("Tokenize", variant="primary", elem_id="tok-run")
    columns = gr.HTML(elem_id="token-columns")
    stats = gr.HTML(elem_id="token-stats")
    panel = code_panel("tok")

    with gr.Accordion("Where do two tokenizers cut differently?", open=False):
        with gr.Row():
            first = gr.Dropdown(choices=model_choices(tokens.PRESET), value="gpt2", label="Tokenizer A")
            second = gr.Dropdown(
                choices=model_choices(tokens.PRESET), value="Xenova/gpt-4", label="Tokenizer B"
            )
            compare_btn = gr.Button("Compare boundaries", elem_id="tok-compare")
        boundary_html = gr.HTML(elem_id="token-boundaries")
        boundary_panel = code_panel("tok-boundaries")

    with explained(
        "Chat templates: what a chat model really reads",
        "A chat model sees one long string: the template wraps each turn in special tokens "
        "(outlined in red). Edit the conversation (JSON list of role/content messages).",
    ):
        with gr.Row():
            chat_names = gr.CheckboxGroup(
                choices=model_choices(
                    [
                        "microsoft/Phi-3-mini-4k-instruct",
                        "HuggingFaceTB/SmolLM2-135M-Instruct",
                        "Qwen/Qwen2-7B-Instruct",
                    ]
                ),
                value=["microsoft/Phi-3-mini-4k-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"],
                label="Tokenizers with a chat template",
            )
            conversation = gr.Code(
                value=json.dumps(tokens.DEFAULT_CONVERSATION, indent=1, ensure_ascii=False),
                language="json",
                label="Conversation",
            )
        chat_btn = gr.Button("Render the template", elem_id="tok-chat")
        chat_html = gr.HTML(elem_id="chat-template")
        chat_panel = code_panel("tok-chat")

    def tokenize_steps(
        text: str, names: list[str], show_ws: bool, show_ids: bool, progress: gr.Progress, code: bool
    ) -> Iterator[tuple[Any, ...]]:
        """The columns and the statistics, then (with ``code``) the code and the downloads.

        Tokenizers that are here (packaged, cached, loaded) show at once; those that must come from the
        Hub show as "downloading" and fill in one by one, so the available never wait for the rest.
        """
        clean, notes = tokens.prepare_text(text or "", settings.max_text_chars)
        names = list(names or [])
        later = [name for name in names if tokens.needs_download(name)]
        results = {
            name: tokens.pending(name) if name in later else tokens.tokenize(clean, name) for name in names
        }

        def view() -> tuple[str, str]:
            shown = list(results.values())
            columns = render.token_columns(
                shown,
                clean,
                show_ids=show_ids,
                show_whitespace=show_ws,
                notes=notes,
                follow=lambda name: links.attention_link(name, clean),
            )
            done = [r for r in shown if not r.pending]
            return columns, render.table(STATS_HEADERS, _stats_rows(done, clean), "Statistics")

        for name in progress.tqdm(later, desc="Downloading tokenizers"):
            yield (*view(), *panel.unchanged())
            results[name] = tokens.tokenize(clean, name)
        if not code:
            yield (*view(), *panel.unchanged())
            return
        done = list(results.values())
        files = export.tokenizer_files(done, (STATS_HEADERS, _stats_rows(done, clean)))
        yield (*view(), snippets.tokenizers(clean, names, settings.max_text_chars), files)

    @user_errors
    def tokenize_view(
        text: str, names: list[str], show_ws: bool, show_ids: bool, progress: gr.Progress = gr.Progress()
    ) -> Iterator[tuple[Any, ...]]:
        """Inputs: text, tokenizers, whitespace and id toggles. Outputs: the columns, the statistics, the
        code and the downloads."""
        yield from tokenize_steps(text, names, show_ws, show_ids, progress, code=True)

    @user_errors
    def first_view(
        text: str, names: list[str], show_ws: bool, show_ids: bool, progress: gr.Progress = gr.Progress()
    ) -> Iterator[tuple[Any, ...]]:
        """The page's first view: the code panel stays empty until the reader asks (no code at page load)."""
        yield from tokenize_steps(text, names, show_ws, show_ids, progress, code=False)

    @user_errors
    def add_tokenizer(model_id: str, names: list[str]) -> tuple[Any, str]:
        model_id = (model_id or "").strip()
        if not model_id:
            raise gr.Error("Type a Hugging Face model id first, e.g. bert-base-cased.")
        if not _HUB_ID.match(model_id):
            raise gr.Error(
                f"{model_id!r} is not a Hugging Face model id (owner/name, letters, digits, . _ -)."
            )
        check_allowed(model_id, settings)
        current = list(names or [])
        if model_id not in current:
            current.append(model_id)
        choices = list(dict.fromkeys([*tokens.PRESET, *current]))
        return gr.update(choices=model_choices(choices), value=current), ""

    @user_errors
    def boundary_view(text: str, a: str, b: str) -> tuple[str, str, list[str]]:
        """Inputs: text, tokenizers A and B. Outputs: where they cut (HTML), code, downloads."""
        clean, _ = tokens.prepare_text(text or "", settings.max_text_chars)
        first, second = tokens.tokenize(clean, a), tokens.tokenize(clean, b)
        for result in (first, second):
            if result.error:
                raise gr.Error(result.error)
        cut = tokens.boundaries(first, second)
        return (
            render.boundaries_view(clean, first, second, cut),
            snippets.boundaries(clean, a, b),
            export.boundaries_files(clean, first, second, cut),
        )

    @user_errors
    def chat_view(names: list[str], conversation: str) -> tuple[str, Any, Any]:
        """Inputs: tokenizers, conversation (JSON). Outputs: each template's rendering (HTML), code,
        downloads (of the tokenizers that have a template here)."""
        try:
            messages = json.loads(conversation or "[]")
        except json.JSONDecodeError as error:
            raise gr.Error(
                f"The conversation is not valid JSON: {error.msg} (line {error.lineno})."
            ) from None
        if (
            not isinstance(messages, list)
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
            or not messages
        ):
            raise gr.Error(
                'The conversation must be a non-empty list like [{"role": "user", "content": "Hi"}].'
            )
        views, rendered = [], []
        for name in names or []:
            try:
                rendered.append(tokens.render_chat(name, messages))
                views.append(render.chat_view(rendered[-1]))
            except (catalog.ModelUnavailable, ValueError) as error:
                views.append(render.token_column(tokens.Tokenization(name=name, error=str(error)), ""))
        if not rendered:
            return "".join(views), *chat_panel.unchanged()
        code = snippets.chat_template([r.name for r in rendered], messages)
        return "".join(views), code, export.chat_files(rendered)

    def restore_names(requested: list[str]) -> Any:
        """A link's tokenizers, added to the choices (the link was checked by lab.links)."""
        choices = list(dict.fromkeys([*tokens.PRESET, *requested]))
        return gr.update(choices=model_choices(choices), value=requested)

    # The link (?text=…&tok=a,b) is applied on page load; the first view is drawn after it, with or without.
    arrived = page_links.share(
        demo, "tokenizers", {"text": text, "tok": (names, restore_names)}, on_load=True
    )

    inputs = [text, names, show_ws, show_ids]
    run.click(tokenize_view, inputs, [columns, stats, *panel.outputs], api_visibility="private", **CPU_EVENT)
    for trigger in (text.submit, names.change, show_ws.change, show_ids.change):
        trigger(
            tokenize_view,
            inputs,
            [columns, stats, *panel.outputs],
            api_visibility="private",
            trigger_mode="always_last",
            **CPU_EVENT,
        )
    sync = page_links.sync_js("tokenizers", ["text", "tok"])
    text.change(None, [text, names], None, js=sync, api_visibility="private")
    names.change(None, [text, names], None, js=sync, api_visibility="private")
    add.click(add_tokenizer, [hub_id, names], [names, hub_id], api_visibility="private", **CPU_EVENT)
    hub_id.submit(add_tokenizer, [hub_id, names], [names, hub_id], api_visibility="private", **CPU_EVENT)
    boundary_outputs = [boundary_html, *boundary_panel.outputs]
    compare_btn.click(
        boundary_view, [text, first, second], boundary_outputs, api_visibility="private", **CPU_EVENT
    )
    chat_outputs = [chat_html, *chat_panel.outputs]
    chat_btn.click(chat_view, [chat_names, conversation], chat_outputs, api_visibility="private", **CPU_EVENT)

    arrived.ready(first_view, inputs, [columns, stats, *panel.outputs], api_visibility="private", **CPU_EVENT)

    @user_errors
    def tokenize_api(text: str, tokenizers: list[str] | None = None) -> list[dict[str, Any]]:
        """Tokenize `text` with each tokenizer (default: the book's and the newer ones).

        Returns one record per tokenizer: name, tokens (each id decoded alone), ids, vocab_size, method,
        special_tokens and error (why it is unavailable, or null).
        """
        text = validate.text(text, "text", max_chars=settings.max_text_chars, required=False)
        tokenizers = validate.texts(tokenizers, "tokenizers", max_items=MAX_API_TOKENIZERS, max_chars=200)
        for name in tokenizers:
            check_allowed(name, settings)
        results = tokens.compare(text, tokenizers or None, max_chars=settings.max_text_chars)
        return [
            {
                "name": r.name,
                "tokens": r.tokens,
                "ids": r.ids,
                "vocab_size": r.vocab_size,
                "method": r.method,
                "special_tokens": r.special_tokens,
                "error": r.error,
            }
            for r in results
        ]

    gr.api(tokenize_api, api_name="tokenize", concurrency_limit=None)
