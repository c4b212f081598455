"""Tab 2, chapters 2 and 3: attention, the forward pass and embeddings, drawn live for real models.

Layout and wiring only: the models run in :mod:`lab.attention` and :mod:`lab.embeddings`, the pictures
come from :mod:`lab.attention_view`. The web API: ``/attention``, ``/next_token``, ``/logit_lens``,
``/generate`` and ``/similarity``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import gradio as gr
import numpy as np

from lab import attention as attn
from lab import attention_view as view
from lab import embeddings, export, links, snippets, validate
from lab.config import Settings
from tabs import access
from tabs import links as page_links
from tabs.common import api, check_allowed, explained, in_batch, model_choices, on, slider
from tabs.export import code_panel

INTRO = """
## Chapters 2–3 · Looking inside a language model
A transformer LLM is a tokenizer, a stack of blocks (attention + feed-forward) and an LM head that scores
every token of the vocabulary. Here you can watch each part on real models: **MiniLM** (a BERT-style
encoder, 6 layers × 12 heads) and **SmolLM2-135M** (a Llama-style decoder, 30 layers × 9 heads with
grouped-query attention) run on this machine without a download; the book's models load when the
Hugging Face Hub is reachable or `LAB_MODEL_DIR` holds them.
"""

ATTENTION_TEXT = "The animal didn't cross the street because it was too tired."
PROMPT = "The capital of France is"
SENTENCES = "\n".join(embeddings.EXAMPLE_SENTENCES)
WORDS = "king\nqueen\nman\nwoman\nprince\napple\nbanana\norange\nParis\nLondon\nBerlin\ndog\ncat\npuppy"
BANK = "\n".join(
    [
        "We sat on the bank of the river.",
        "The river bank was muddy after the rain.",
        "I deposited my salary at the bank.",
        "The bank raised its interest rates.",
    ]
)


def _model_menu(ids: list[str], value: str, settings: Settings, label: str = "Model", **layout: Any) -> Any:
    """A model dropdown: the lab's choices, and any Hub id typed in unless this is a classroom server."""
    return gr.Dropdown(
        model_choices(ids), value=value, label=label, allow_custom_value=not settings.classroom, **layout
    )


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


# -- the forward steps, batched across students (prepare here, forward in the queue, present after) --


def _attention(text: str, model_id: str) -> attn.AttentionResult:
    prepared = attn.prepare_attention(text, model_id)
    return in_batch("attention", prepared.batch_key, prepared, attn.attention_batch)


def _next_token_logits(prompt: str, model_id: str) -> np.ndarray:
    prepared = attn.prepare_prompt(prompt, model_id)
    return in_batch("next_token", prepared.batch_key, prepared, attn.next_token_logits_batch)


def _sentence_vectors(texts: list[str], model_id: str) -> np.ndarray:
    """The texts' sentence embeddings; at least two texts (a similarity needs a pair)."""
    prepared = embeddings.prepare_texts(texts, model_id, minimum=2)
    return in_batch("similarity", prepared.batch_key, prepared, embeddings.embed_batch)


# -- the tab ---------------------------------------------------------------------------------------


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the attention and embeddings tab inside ``demo``."""
    gr.Markdown(INTRO)
    with gr.Tabs() as sections:
        with gr.Tab("Attention", id="att-attention"):
            _attention_section(demo, settings)
        with gr.Tab("Inside the forward pass", id="att-forward"):
            _forward_section(demo, settings, sections)
        with gr.Tab("Embeddings", id="att-embeddings"):
            _embeddings_section(demo, settings, sections)


def _head_view(result: attn.AttentionResult, layer: int) -> str:
    """One layer's head view, each token linked to its embedding neighbours and logit-lens column."""
    emb_model = result.model if result.model in embeddings.TOKEN_MODELS else embeddings.SENTENCE_MODEL
    lens_model = result.model if result.model in attn.DECODER_MODELS else attn.DECODER
    follow = links.attention_follow(
        result.text, result.tokens, result.special, emb_model=emb_model, lens_model=lens_model
    )
    return view.head_view(result, layer, follow)


def _attention_section(demo: gr.Blocks, settings: Settings) -> None:
    gr.Markdown(
        "Each head scores every token against the others (query · key), softmaxes the scores and "
        "mixes the value vectors by those weights. Lines show the weights of one layer; the grid "
        f"shows every layer and head. Up to {attn.MAX_TOKENS} tokens."
    )
    with gr.Row():
        model = _model_menu(attn.ATTENTION_MODELS, attn.ENCODER, settings, elem_id="att-model", scale=2)
        text = gr.Textbox(ATTENTION_TEXT, label="Text", lines=2, elem_id="att-text", scale=4)
        run = gr.Button("Show attention", variant="primary", elem_id="att-run", scale=1)
    state = access.session_state(None, settings)  # this reader's attention weights
    with gr.Row():
        layer = gr.Slider(0, 5, value=0, step=1, label="Layer (head view)", elem_id="att-layer")
        head = gr.Slider(0, 11, value=0, step=1, label="Head (one head's heat map)", elem_id="att-head")
    head_view = gr.HTML(elem_id="att-head-view")
    with gr.Row():
        with gr.Column():
            gr.Markdown(
                "**Model view**: every layer (rows, 0 at the top) × head (columns). Darker is more "
                "attention. Click a square to open that head."
            )
            grid = gr.Image(
                show_label=False,
                interactive=False,
                elem_id="att-model-view",
                alt_text="Model view: attention of every layer (rows) and head (columns); click a square "
                "to open that head",
                type="pil",
                height=560,
                buttons=["fullscreen"],
            )
        single = gr.Plot(label="One head", elem_id="att-single")
    panel = code_panel("att")

    def compute(model_id: str, text: str, at_layer: int = 0, at_head: int = 0) -> tuple[Any, ...]:
        """Inputs: model, text. Outputs: the result (state), layer and head sliders, head view, model view,
        one head (layer and head 0, or a link's where the model has them), code, downloads."""
        check_allowed(model_id, settings)
        result = _attention(text or "", model_id)
        result.weights = result.weights.astype(np.float16)  # per-user state: half the memory
        at_layer, at_head = min(at_layer, result.layers - 1), min(at_head, result.heads - 1)
        return (
            result,
            gr.update(maximum=result.layers - 1, value=at_layer),
            gr.update(maximum=result.heads - 1, value=at_head),
            _head_view(result, at_layer),
            view.model_view(result),
            view.head_heatmap(result, at_layer, at_head),
            snippets.attention(text or "", model_id),
            export.attention_files(result, at_layer),
        )

    def from_link(model_id: str, text: str, link: dict[str, Any]) -> tuple[Any, ...]:
        """Inputs: model, text (both set by the link), the link. Outputs: those of :func:`compute`."""
        return compute(model_id, text, link.get("att.layer", 0), link.get("att.head", 0))

    def change_layer(result: attn.AttentionResult | None, layer: float, head: float) -> tuple[Any, Any]:
        """Inputs: the result, layer, head. Outputs: that layer's head view, that head's heat map."""
        if result is None:
            return "", gr.update()
        return (
            _head_view(result, int(layer)),
            view.head_heatmap(result, int(layer), int(head)),
        )

    def change_head(result: attn.AttentionResult | None, layer: float, head: float) -> Any:
        """Inputs: the result, layer, head. Outputs: that head's heat map."""
        return gr.update() if result is None else view.head_heatmap(result, int(layer), int(head))

    def open_cell(result: attn.AttentionResult | None, event: gr.SelectData) -> tuple[Any, ...]:
        """Inputs: the result, a click on the model view. Outputs: layer and head sliders, head view, one
        head."""
        if result is None:
            raise gr.Error("Press 'Show attention' first.")
        cell = view.cell_at(result, *event.index)
        if cell is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        layer_index, head_index = cell
        return (
            gr.update(value=layer_index),
            gr.update(value=head_index),
            _head_view(result, layer_index),
            view.head_heatmap(result, layer_index, head_index),
        )

    outputs = [state, layer, head, head_view, grid, single, *panel.outputs]
    sync = page_links.sync_js("attention", ["att.model", "att.text", "att.layer", "att.head"])
    for trigger in (run.click, text.submit):
        on(trigger, compute, [model, text], outputs, gpu=True, batched=True)
    on(layer.release, change_layer, [state, layer, head], [head_view, single])
    on(head.release, change_head, [state, layer, head], single)
    on(grid.select, open_cell, [state], [layer, head, head_view, single])
    for shown in (single.change, layer.release, head.release):
        on(shown, None, [model, text, layer, head], None, js=sync)
    arrived = page_links.share(
        demo, "attention", {"att.model": model, "att.text": text}, extra=("att.layer", "att.head")
    )
    on(arrived.ready, from_link, [model, text, arrived.state], outputs, gpu=True, batched=True)

    def attention(text: str, model: str = attn.ENCODER) -> dict[str, Any]:
        """Attention weights of every layer and head: {tokens, weights[layer][head][query][key]}."""
        text, model = validate.text(text, "text", required=False), validate.model_id(model)
        check_allowed(model, settings)
        result = _attention(text, model)
        weights = np.round(result.weights, 4).tolist()
        return {"model": result.model, "tokens": result.tokens, "causal": result.causal, "weights": weights}

    api(attention, batched=True)


def _forward_section(demo: gr.Blocks, settings: Settings, sections: gr.Tabs) -> None:
    with gr.Row():
        model = _model_menu(attn.DECODER_MODELS, attn.DECODER, settings, elem_id="fwd-model", scale=2)
        prompt = gr.Textbox(PROMPT, label="Prompt", elem_id="fwd-prompt", scale=4)
        run = gr.Button("Predict the next token", variant="primary", elem_id="fwd-run", scale=1)
    gr.Markdown(
        "The LM head gives every token of the vocabulary a probability. Greedy decoding takes the "
        "top one; sampling draws from the distribution after **temperature** (below 1 sharpens, above "
        "1 flattens, 0 is greedy) and **top-p** (keep the most probable tokens until their mass "
        "reaches p)."
    )
    with gr.Row():
        k = slider("k", "Top-k shown")
        temperature = slider("temperature", "Temperature", elem_id="fwd-temperature")
        top_p = slider("top_p", "Top-p", elem_id="fwd-top-p")
    logits = access.session_state(None, settings)
    chart = gr.Plot(elem_id="fwd-chart")
    panel = code_panel("fwd")

    with explained(
        "Generate: append the top token, again and again",
        "Greedy generation continues the prompt one token at a time, always with the most probable "
        "next token. When a serving engine is configured (`LAB_GENERATION_URL`), it writes the text; "
        "the views above stay in this process, since they read the model's insides.",
    ):
        with gr.Row():
            free_tokens = slider("new_tokens", "New tokens", elem_id="fwd-gen-tokens")
            free_run = gr.Button("Generate", elem_id="fwd-gen-run")
            free_stop = gr.Button("Stop", elem_id="fwd-gen-stop")
        free_text = gr.Textbox(label="Generated text (greedy)", lines=4, elem_id="fwd-gen-text")
    with gr.Accordion("Layer by layer: the logit lens", open=False) as lens_section:
        lens_run = gr.Button("Run the logit lens", elem_id="fwd-lens-run")
        lens = gr.HTML(elem_id="fwd-lens")
        lens_panel = code_panel("fwd-lens")
    with gr.Accordion("The model's structure", open=False):
        structure_run = gr.Button("Show the structure", elem_id="fwd-structure-run")
        summary = gr.Markdown(elem_id="fwd-structure-summary")
        tree = gr.Code(language=None, label="print(model), with parameter counts", elem_id="fwd-tree")
        structure_panel = code_panel("fwd-structure")
    with explained(
        "The KV cache: generation with and without it",
        "Without the cache, every new token recomputes keys and values for the whole text; with "
        "it, only for the new token. The book: 100 tokens in 4.5–6.7 s with the cache, 21.8 s "
        "without, on a T4 with Phi-3.",
    ):
        with gr.Row():
            new_tokens = slider("kv_new_tokens", "New tokens")
            kv_run = gr.Button("Generate twice", elem_id="fwd-kv-run")
            kv_stop = gr.Button("Cancel", elem_id="fwd-kv-stop")
        generated = gr.Textbox(label="Generated text (greedy)", lines=4, elem_id="fwd-kv-text")
        timings = gr.Markdown(elem_id="fwd-kv-timings")

    def predict(model_id: str, prompt: str, k: float, temperature: float, top_p: float) -> tuple[Any, ...]:
        """Inputs: model, prompt, k, temperature, top-p. Outputs: (model, prompt, logits) state, the bar
        chart, code, downloads."""
        check_allowed(model_id, settings)
        values = _next_token_logits(prompt or "", model_id)
        return (
            (model_id, prompt or "", values),
            *shown(model_id, prompt or "", values, k, temperature, top_p),
        )

    def shown(model_id: str, prompt: str, values: np.ndarray, *knobs: float) -> tuple[Any, Any, Any]:
        """The bar chart of the distribution after temperature and top-p, its code and its downloads."""
        shape = validate.bounds(**dict(zip(("k", "temperature", "top_p"), knobs)))
        result = attn.distribution(values, model_id, **shape)
        figure = view.next_token_figure(result, shape["temperature"], shape["top_p"])
        asked = {"model": model_id, "prompt": prompt, **shape}
        return (
            figure,
            snippets.next_token(prompt, model_id, **shape),
            export.next_token_files(result, figure, asked),
        )

    def reshape(state: tuple[str, str, np.ndarray] | None, k: float, temperature: float, top_p: float) -> Any:
        """Inputs: (model, prompt, logits) state, k, temperature, top-p. Outputs: the bar chart, code and
        downloads, redrawn."""
        if state is None:
            return gr.update(), *panel.unchanged()
        return shown(*state, k, temperature, top_p)

    def run_lens(model_id: str, prompt: str) -> tuple[str, str, list[str]]:
        """Inputs: model, prompt. Outputs: the logit lens table, code, downloads."""
        check_allowed(model_id, settings)
        rows = attn.logit_lens(prompt or "", model_id)
        tokens = view.prompt_tokens(prompt, model_id)
        code = snippets.logit_lens(prompt or "", model_id)
        return view.logit_lens_table(rows, tokens), code, export.logit_lens_files(rows, tokens)

    def show_structure(model_id: str) -> tuple[str, str, str, list[str]]:
        """Inputs: model. Outputs: a summary (markdown), print(model) with parameter counts, code,
        downloads."""
        check_allowed(model_id, settings)
        s = attn.structure(model_id)
        code = snippets.structure(model_id)
        return view.structure_summary(s), s.tree, code, export.structure_files(s, model_id)

    def free_generate(model_id: str, prompt: str, count: float) -> Any:
        """Inputs: model, prompt, new tokens. Outputs: the generated text, growing."""
        check_allowed(model_id, settings)
        with contextlib.closing(attn.continue_text(prompt or "", model_id, count)) as texts:
            yield from texts

    def kv_cache(model_id: str, prompt: str, count: float, progress: gr.Progress = gr.Progress()):
        """Inputs: model, prompt, new tokens. Outputs: the generated text, the timings (markdown)."""
        check_allowed(model_id, settings)
        count = validate.bound("kv_new_tokens", count)
        times = {}
        for use_cache in (True, False):
            label = "with the KV cache" if use_cache else "without the KV cache"
            progress(0, desc=f"Generating {int(count)} tokens {label}")
            # closing(): Stop ends the generation thread at once, not when the generator is collected.
            with contextlib.closing(
                attn.generate_stream(prompt or "", model_id, int(count), use_cache)
            ) as steps:
                for text, final in steps:
                    if final is None:
                        yield text, f"Generating {label}…"
                    else:
                        times[use_cache] = final.seconds
        yield text, view.kv_timings(times, int(count))

    inputs = [model, prompt, k, temperature, top_p]
    for trigger in (run.click, prompt.submit):
        on(trigger, predict, inputs, [logits, chart, *panel.outputs], gpu=True, batched=True)
    for knob in (k, temperature, top_p):
        on(knob.release, reshape, [logits, k, temperature, top_p], [chart, *panel.outputs])
    on(lens_run.click, run_lens, [model, prompt], [lens, *lens_panel.outputs], gpu=True)
    # A link from a token of the attention view: the lens of the text up to that token.
    arrived = page_links.share(demo, "attention", {"lens.model": model, "lens.text": prompt})
    opened = [sections, lens_section]
    on(arrived.ready, lambda: (gr.Tabs(selected="att-forward"), gr.Accordion(open=True)), None, opened)
    on(arrived.ready, run_lens, [model, prompt], [lens, *lens_panel.outputs], gpu=True)
    structure_outputs = [summary, tree, *structure_panel.outputs]
    on(structure_run.click, show_structure, [model], structure_outputs, gpu=True)
    free_event = on(free_run.click, free_generate, [model, prompt, free_tokens], free_text, generates=True)
    on(free_stop.click, None, None, None, cancels=[free_event])
    kv_event = on(kv_run.click, kv_cache, [model, prompt, new_tokens], [generated, timings], gpu=True)
    on(kv_stop.click, None, None, None, cancels=[kv_event])

    def next_token(
        prompt: str, model: str = attn.DECODER, k: int = 10, temperature: float = 1.0, top_p: float = 1.0
    ) -> list[list[Any]]:
        """The k most probable next tokens as [token, probability] after temperature and top-p."""
        shape = validate.bounds(k=k, temperature=temperature, top_p=top_p)
        prompt, model = validate.text(prompt, "prompt", required=False), validate.model_id(model)
        check_allowed(model, settings)
        result = attn.distribution(_next_token_logits(prompt, model), model, **shape)
        return [[token, prob] for token, prob in attn.ranked(result)]

    def logit_lens(prompt: str, model: str = attn.DECODER, k: int = 1) -> list[Any]:
        """Top-k tokens with probabilities for every [layer][position]."""
        k = validate.bound("lens_k", k)
        prompt, model = validate.text(prompt, "prompt", required=False), validate.model_id(model)
        check_allowed(model, settings)
        rows = attn.logit_lens(prompt, model, k)
        return [[[[t, p] for t, p in cell] for cell in row] for row in rows]

    def generate(prompt: str, model: str = attn.DECODER, new_tokens: int = 30) -> Any:
        """The greedy continuation of the prompt, growing (on the serving engine when it serves the model)."""
        prompt, model = validate.text(prompt, "prompt", required=False), validate.model_id(model)
        check_allowed(model, settings)
        with contextlib.closing(attn.continue_text(prompt, model, new_tokens)) as texts:
            yield from texts

    api(next_token, batched=True)
    api(logit_lens)
    api(generate, generates=True)


def _embeddings_section(demo: gr.Blocks, settings: Settings, sections: gr.Tabs) -> None:
    with gr.Accordion("Sentence similarity", open=True):
        with gr.Row():
            sentence_model = _model_menu(
                embeddings.SENTENCE_MODELS, embeddings.SENTENCE_MODEL, settings, "Sentence model"
            )
            sentences = gr.Textbox(
                SENTENCES, lines=6, label="Sentences, one per line", elem_id="emb-sentences"
            )
        similar_run = gr.Button("Compare", variant="primary", elem_id="emb-sim-run")
        similar_plot = gr.Plot(elem_id="emb-sim-plot")
        vector = gr.Markdown(elem_id="emb-vector")
        similar_panel = code_panel("emb-sim")
    with gr.Accordion("A map of embeddings", open=False) as map_section:
        with gr.Row():
            source = gr.Radio(
                ["vocabulary tokens (static)", "the sentences above"],
                value="vocabulary tokens (static)",
                label="What to map",
            )
            method = gr.Radio(["pca", "umap"], value="pca", label="Projection")
            token_model = _model_menu(
                embeddings.TOKEN_MODELS, embeddings.SENTENCE_MODEL, settings, "Model (for tokens)"
            )
        words = gr.Textbox(WORDS, lines=5, label="Words or tokens, one per line", elem_id="emb-words")
        map_run = gr.Button("Draw the map", elem_id="emb-map-run")
        map_plot = gr.Plot(elem_id="emb-map")
        map_panel = code_panel("emb-map")
        with gr.Row():
            probe = gr.Textbox("king", label="Nearest neighbours of", elem_id="emb-probe")
            probe_run = gr.Button("Find neighbours", elem_id="emb-probe-run")
        neighbours_table = gr.HTML(elem_id="emb-neighbours")
        neighbours_panel = code_panel("emb-neighbours")
    with explained(
        "Static versus contextual embeddings",
        "A model starts from one **static** vector per vocabulary token, the same in every "
        "sentence; its layers turn it into a **contextual** vector that depends on the words "
        "around it. Same word, different meanings: compare the two similarity matrices.",
    ):
        with gr.Row():
            word = gr.Textbox("bank", label="Word", elem_id="emb-word")
            word_model = _model_menu(embeddings.TOKEN_MODELS, embeddings.SENTENCE_MODEL, settings)
        bank = gr.Textbox(BANK, lines=4, label="Sentences containing the word", elem_id="emb-bank")
        bank_run = gr.Button("Compare the word's vectors", elem_id="emb-bank-run")
        with gr.Row():
            static_plot = gr.Plot(elem_id="emb-static")
            contextual_plot = gr.Plot(elem_id="emb-contextual")
        bank_note = gr.Markdown(elem_id="emb-bank-note")
        bank_panel = code_panel("emb-bank")

    def compare(model_id: str, text: str) -> tuple[Any, ...]:
        """Inputs: model, sentences. Outputs: the similarity heat map, the first sentence's vector, code,
        downloads."""
        check_allowed(model_id, settings)
        lines = _lines(text)
        vectors = _sentence_vectors(lines, model_id)
        described = view.vector_description(lines[0], embeddings.TextVector.of(vectors[0]))
        matrix = embeddings.cosine(vectors)
        figure = view.matrix_heatmap(matrix, lines, f"Cosine similarity · {model_id}")
        code = snippets.similarity(lines, model_id)
        return figure, described, code, export.similarity_files(lines, matrix, figure, model_id)

    def draw_map(
        what: str, how: str, model_id: str, words_text: str, sentences_text: str, sentence_model_id: str
    ) -> tuple[Any, str, list[str]]:
        """Inputs: what to map, projection, token model, words, sentences, sentence model. Outputs: a map,
        code, downloads."""
        sentences = what.startswith("the sentences")
        if sentences:
            check_allowed(sentence_model_id, settings)
            model_id, texts = sentence_model_id, _lines(sentences_text)
            labels, vectors = texts, embeddings.embed(texts, model_id)
            title = f"{len(labels)} sentences · {model_id} · {how.upper()}"
        else:
            check_allowed(model_id, settings)
            texts = _lines(words_text)
            labels, vectors = embeddings.token_vectors(texts, model_id)
            title = f"{len(labels)} static token embeddings · {model_id} · {how.upper()}"
        points = embeddings.project(vectors, how)  # (n, 2)
        figure = view.scatter(points, labels, title)
        asked = {"model": model_id, "projection": how, "mapped": "sentences" if sentences else "tokens"}
        return (
            figure,
            snippets.embedding_map(texts, model_id, how, sentences=sentences),
            export.embedding_map_files(labels, points, figure, asked),
        )

    def find_neighbours(token: str, model_id: str) -> tuple[str, str, list[str]]:
        """Inputs: a token, model. Outputs: its nearest neighbours (table), code, downloads."""
        check_allowed(model_id, settings)
        pairs = embeddings.neighbours(token, model_id)
        return (
            view.neighbours_table(token, model_id, pairs),
            snippets.neighbours(token, model_id),
            export.neighbours_files(token, model_id, pairs),
        )

    def compare_bank(word_text: str, text: str, model_id: str) -> tuple[Any, ...]:
        """Inputs: word, sentences, model. Outputs: static and contextual heat maps, a note, code,
        downloads."""
        check_allowed(model_id, settings)
        lines = _lines(text)
        result = embeddings.compare_word(word_text, lines, model_id)
        static, contextual, note = view.static_vs_contextual(result)
        figures = {"static": static, "contextual": contextual}
        return (
            static,
            contextual,
            note,
            snippets.static_vs_contextual(word_text, lines, model_id),
            export.static_vs_contextual_files(result, figures, model_id),
        )

    similar_outputs = [similar_plot, vector, *similar_panel.outputs]
    on(similar_run.click, compare, [sentence_model, sentences], similar_outputs, gpu=True, batched=True)
    map_inputs = [source, method, token_model, words, sentences, sentence_model]
    on(map_run.click, draw_map, map_inputs, [map_plot, *map_panel.outputs], gpu=True)
    neighbours_outputs = [neighbours_table, *neighbours_panel.outputs]
    on(probe_run.click, find_neighbours, [probe, token_model], neighbours_outputs, gpu=True)
    # A link from a token of the attention view: its nearest neighbours.
    arrived = page_links.share(demo, "attention", {"emb.token": probe, "emb.model": token_model})
    shown = [sections, map_section]
    on(arrived.ready, lambda: (gr.Tabs(selected="att-embeddings"), gr.Accordion(open=True)), None, shown)
    on(arrived.ready, find_neighbours, [probe, token_model], neighbours_outputs, gpu=True)
    bank_outputs = [static_plot, contextual_plot, bank_note, *bank_panel.outputs]
    on(bank_run.click, compare_bank, [word, bank, word_model], bank_outputs, gpu=True)

    def similarity(texts: list[str], model: str = embeddings.SENTENCE_MODEL) -> list[list[float]]:
        """Cosine similarity matrix of the texts' sentence embeddings."""
        texts = validate.texts(texts, "texts", max_items=embeddings.MAX_TEXTS)
        model = validate.model_id(model)
        check_allowed(model, settings)
        matrix = embeddings.cosine(_sentence_vectors(texts, model))
        return np.round(matrix, 5).tolist()

    api(similarity, batched=True)
