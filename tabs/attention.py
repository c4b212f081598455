"""Tab 2, chapters 2 and 3: attention, the forward pass and embeddings, drawn live for real models."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import numpy as np

from lab import attention, attention_view, embeddings, render
from lab.config import Settings
from tabs.common import CPU_EVENT, GPU_EVENT, check_allowed, model_choices, user_errors

INTRO = """
### Chapters 2–3 · Looking inside a language model
A transformer LLM is a tokenizer, a stack of blocks (attention + feed-forward) and an LM head that scores
every token of the vocabulary. Here you can watch each part on real models: **MiniLM** (a BERT-style
encoder, 6 layers × 12 heads) and **SmolLM2-135M** (a Llama-style decoder, 30 layers × 9 heads with
grouped-query attention) run on this machine without a download; the book's models load when the
Hugging Face Hub is reachable or `LAB_MODEL_DIR` holds them.
"""

ATTENTION_TEXT = "The animal didn't cross the street because it was too tired."
PROMPT = "The capital of France is"
SENTENCES = "\n".join(
    [
        "I love eating fresh bread.",
        "Baking a loaf at home is fun.",
        "The stock market fell today.",
        "Shares dropped sharply this morning.",
        "My cat sleeps all day.",
        "Kittens like to nap in the sun.",
    ]
)
WORDS = "king\nqueen\nman\nwoman\nprince\napple\nbanana\norange\nParis\nLondon\nBerlin\ndog\ncat\npuppy"
BANK = "\n".join(
    [
        "We sat on the bank of the river.",
        "The river bank was muddy after the rain.",
        "I deposited my salary at the bank.",
        "The bank raised its interest rates.",
    ]
)


# -- present: figures and tables from plain data ---------------------------------------------------


def next_token_figure(result: attention.NextToken, temperature: float, top_p: float):
    import plotly.graph_objects as go

    labels = [f"{t!r}" + (" ← greedy" if i == 0 else "") for i, t in enumerate(result.tokens)]
    colours = ["#2da44e" if inside else "#d0d7de" for inside in result.in_nucleus]
    figure = go.Figure(
        [
            go.Bar(
                y=labels,
                x=result.raw,
                orientation="h",
                name="probability (temperature 1)",
                marker_color="#8c959f",
                opacity=0.45,
            ),
            go.Bar(
                y=labels,
                x=result.reshaped,
                orientation="h",
                name=f"after T={temperature:g}, top-p={top_p:g}",
                marker_color=colours,
            ),
        ]
    )
    figure.update_layout(
        barmode="overlay",
        height=60 + 28 * len(labels),
        yaxis={"autorange": "reversed"},
        xaxis={"title": "probability", "range": [0, 1]},
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": 1.08},
        title=f"{result.nucleus_size:,} token(s) of the vocabulary stay inside the nucleus (green)",
    )
    return figure


def logit_lens_table(rows: list[list[list[tuple[str, float]]]], tokens: list[str]) -> str:
    """Layers (rows, last at the bottom) × positions: each cell the top token, shaded by probability."""
    head = "".join(f"<th>{html.escape(t)}</th>" for t in tokens)
    body = []
    for layer, row in enumerate(rows):
        cells = []
        for cell in row:
            token, prob = cell[0]
            shade = int(255 - 150 * prob)
            cells.append(
                f'<td style="background:rgb({shade},{shade},255)" title="p={prob:.3f}">'
                f"{html.escape(token.replace(' ', '·'))}<br><small>{prob:.2f}</small></td>"
            )
        body.append(f"<tr><th>layer {layer}</th>{''.join(cells)}</tr>")
    return (
        f'{render.STYLE}<div class="lab-tok" style="overflow:auto"><table class="stats-table lens">'
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        "<div class='note'>Each cell: the LM head applied to that layer's output at that position "
        "(what the model would say next if it stopped there). Read down a column to watch the answer "
        "form.</div></div>"
    )


def scatter(points: np.ndarray, labels: list[str], title: str):
    import plotly.graph_objects as go

    figure = go.Figure(
        go.Scatter(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers+text",
            text=labels,
            textposition="top center",
            hovertext=labels,
            hoverinfo="text",
        )
    )
    figure.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


# -- the tab ---------------------------------------------------------------------------------------


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the attention and embeddings tab inside ``demo``."""
    del demo  # no page-load events here
    gr.Markdown(INTRO)
    with gr.Tabs():
        with gr.Tab("Attention"):
            _attention_section(settings)
        with gr.Tab("Inside the forward pass"):
            _forward_section(settings)
        with gr.Tab("Embeddings"):
            _embeddings_section(settings)


def _attention_section(settings: Settings) -> None:
    gr.Markdown(
        "Each head scores every token against the others (query · key), softmaxes the scores and "
        "mixes the value vectors by those weights. Lines show the weights of one layer; the grid "
        f"shows every layer and head. Up to {attention.MAX_TOKENS} tokens."
    )
    with gr.Row():
        model = gr.Dropdown(
            model_choices(attention.ATTENTION_MODELS),
            value=attention.ENCODER,
            label="Model",
            allow_custom_value=not settings.classroom,
            elem_id="att-model",
            scale=2,
        )
        text = gr.Textbox(ATTENTION_TEXT, label="Text", lines=2, elem_id="att-text", scale=4)
        run = gr.Button("Show attention", variant="primary", elem_id="att-run", scale=1)
    state = gr.State(None)
    layer = gr.Slider(0, 5, value=0, step=1, label="Layer (head view)", elem_id="att-layer")
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
                type="pil",
                height=560,
                buttons=["fullscreen"],
            )
        single = gr.Plot(label="One head", elem_id="att-single")

    @user_errors
    def compute(model_id: str, text: str) -> tuple[Any, Any, str, Any, Any]:
        check_allowed(model_id, settings)
        result = attention.attention(text or "", model_id)
        result.weights = result.weights.astype(np.float16)  # per-user state: half the memory
        slider = gr.update(maximum=result.layers - 1, value=0)
        return (
            result,
            slider,
            attention_view.head_view(result, 0),
            attention_view.model_view(result),
            attention_view.head_heatmap(result, 0, 0),
        )

    @user_errors
    def change_layer(result: attention.AttentionResult | None, layer: float) -> str:
        if result is None:
            return ""
        return attention_view.head_view(result, int(layer))

    @user_errors
    def open_cell(result: attention.AttentionResult | None, event: gr.SelectData) -> tuple[Any, Any, Any]:
        if result is None:
            raise gr.Error("Press 'Show attention' first.")
        cell = attention_view.cell_at(result, *event.index)
        if cell is None:
            return gr.update(), gr.update(), gr.update()
        layer_index, head_index = cell
        return (
            gr.update(value=layer_index),
            attention_view.head_view(result, layer_index),
            attention_view.head_heatmap(result, layer_index, head_index),
        )

    outputs = [state, layer, head_view, grid, single]
    run.click(compute, [model, text], outputs, api_visibility="private", **GPU_EVENT)
    text.submit(compute, [model, text], outputs, api_visibility="private", **GPU_EVENT)
    layer.release(change_layer, [state, layer], head_view, api_visibility="private", **CPU_EVENT)
    grid.select(open_cell, [state], [layer, head_view, single], api_visibility="private", **CPU_EVENT)

    @user_errors
    def attention_api(text: str, model: str = attention.ENCODER) -> dict[str, Any]:
        """Attention weights of every layer and head: {tokens, weights[layer][head][query][key]}."""
        check_allowed(model, settings)
        result = attention.attention(text or "", model)
        return {
            "model": result.model,
            "tokens": result.tokens,
            "causal": result.causal,
            "weights": np.round(result.weights, 4).tolist(),
        }

    gr.api(attention_api, api_name="attention", **GPU_EVENT)


def _forward_section(settings: Settings) -> None:
    with gr.Row():
        model = gr.Dropdown(
            model_choices(attention.DECODER_MODELS),
            value=attention.DECODER,
            label="Model",
            allow_custom_value=not settings.classroom,
            elem_id="fwd-model",
            scale=2,
        )
        prompt = gr.Textbox(PROMPT, label="Prompt", elem_id="fwd-prompt", scale=4)
        run = gr.Button("Predict the next token", variant="primary", elem_id="fwd-run", scale=1)
    gr.Markdown(
        "The LM head gives every token of the vocabulary a probability. Greedy decoding takes the "
        "top one; sampling draws from the distribution after **temperature** (below 1 sharpens, above "
        "1 flattens, 0 is greedy) and **top-p** (keep the most probable tokens until their mass "
        "reaches p)."
    )
    with gr.Row():
        k = gr.Slider(3, 30, value=10, step=1, label="Top-k shown")
        temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature", elem_id="fwd-temperature")
        top_p = gr.Slider(0, 1, value=1.0, step=0.01, label="Top-p", elem_id="fwd-top-p")
    logits = gr.State(None)
    chart = gr.Plot(elem_id="fwd-chart")

    with gr.Accordion("Layer by layer: the logit lens", open=False):
        lens_run = gr.Button("Run the logit lens", elem_id="fwd-lens-run")
        lens = gr.HTML(elem_id="fwd-lens")
    with gr.Accordion("The model's structure", open=False):
        structure_run = gr.Button("Show the structure", elem_id="fwd-structure-run")
        summary = gr.Markdown(elem_id="fwd-structure-summary")
        tree = gr.Code(language=None, label="print(model), with parameter counts", elem_id="fwd-tree")
    with gr.Accordion("The KV cache: generation with and without it", open=False):
        gr.Markdown(
            "Without the cache, every new token recomputes keys and values for the whole text; with "
            "it, only for the new token. The book: 100 tokens in 4.5–6.7 s with the cache, 21.8 s "
            "without, on a T4 with Phi-3."
        )
        with gr.Row():
            new_tokens = gr.Slider(10, 200, value=40, step=10, label="New tokens")
            kv_run = gr.Button("Generate twice", elem_id="fwd-kv-run")
            kv_stop = gr.Button("Cancel", elem_id="fwd-kv-stop")
        generated = gr.Textbox(label="Generated text (greedy)", lines=4, elem_id="fwd-kv-text")
        timings = gr.Markdown(elem_id="fwd-kv-timings")

    @user_errors
    def predict(model_id: str, prompt: str, k: float, temperature: float, top_p: float) -> tuple[Any, Any]:
        check_allowed(model_id, settings)
        values = attention.next_token_logits(prompt or "", model_id)
        result = attention.distribution(values, model_id, int(k), temperature, top_p)
        return (model_id, values), next_token_figure(result, temperature, top_p)

    @user_errors
    def reshape(state: tuple[str, np.ndarray] | None, k: float, temperature: float, top_p: float) -> Any:
        if state is None:
            return gr.update()
        model_id, values = state
        return next_token_figure(
            attention.distribution(values, model_id, int(k), temperature, top_p), temperature, top_p
        )

    @user_errors
    def run_lens(model_id: str, prompt: str) -> str:
        check_allowed(model_id, settings)
        rows = attention.logit_lens(prompt or "", model_id)
        from lab import models

        tokenizer = models.tokenizer(model_id)
        tokens = [tokenizer.decode([i]) for i in tokenizer(prompt)["input_ids"]]
        return logit_lens_table(rows, tokens)

    @user_errors
    def show_structure(model_id: str) -> tuple[str, str]:
        check_allowed(model_id, settings)
        s = attention.structure(model_id)
        text = (
            f"**{s.parameters:,} parameters** · embedding matrix {s.vocab_size:,} × {s.hidden_size} "
            f"(vocabulary × model dimension) · {s.layers} layers · {s.heads} attention heads · "
            f"{s.kv_heads} key/value heads" + (" (grouped-query attention)" if s.kv_heads < s.heads else "")
        )
        return text, s.tree

    @user_errors
    def kv_cache(model_id: str, prompt: str, count: float, progress: gr.Progress = gr.Progress()):
        check_allowed(model_id, settings)
        times = {}
        for use_cache in (True, False):
            label = "with the KV cache" if use_cache else "without the KV cache"
            progress(0, desc=f"Generating {int(count)} tokens {label}")
            for text, final in attention.generate_stream(prompt or "", model_id, int(count), use_cache):
                if final is None:
                    yield text, f"Generating {label}…"
                else:
                    times[use_cache] = final.seconds
        ratio = times[False] / times[True]
        yield (
            text,
            (
                f"| | seconds | tokens/s |\n| --- | --- | --- |\n"
                f"| with KV cache | {times[True]:.2f} | {int(count) / times[True]:.1f} |\n"
                f"| without | {times[False]:.2f} | {int(count) / times[False]:.1f} |\n\n"
                f"Without the cache it took **{ratio:.1f}×** as long."
            ),
        )

    inputs = [model, prompt, k, temperature, top_p]
    run.click(predict, inputs, [logits, chart], api_visibility="private", **GPU_EVENT)
    prompt.submit(predict, inputs, [logits, chart], api_visibility="private", **GPU_EVENT)
    for slider in (k, temperature, top_p):
        slider.release(reshape, [logits, k, temperature, top_p], chart, api_visibility="private", **CPU_EVENT)
    lens_run.click(run_lens, [model, prompt], lens, api_visibility="private", **GPU_EVENT)
    structure_run.click(show_structure, [model], [summary, tree], api_visibility="private", **GPU_EVENT)
    kv_event = kv_run.click(
        kv_cache, [model, prompt, new_tokens], [generated, timings], api_visibility="private", **GPU_EVENT
    )
    kv_stop.click(None, None, None, cancels=[kv_event], api_visibility="private")

    @user_errors
    def next_token_api(
        prompt: str, model: str = attention.DECODER, k: int = 10, temperature: float = 1.0, top_p: float = 1.0
    ) -> list[list[Any]]:
        """The k most probable next tokens as [token, probability] after temperature and top-p."""
        check_allowed(model, settings)
        pairs = attention.next_token(prompt or "", model, int(k), float(temperature), float(top_p))
        return [[token, prob] for token, prob in pairs]

    @user_errors
    def logit_lens_api(prompt: str, model: str = attention.DECODER, k: int = 1) -> list[Any]:
        """Top-k tokens with probabilities for every [layer][position]."""
        check_allowed(model, settings)
        rows = attention.logit_lens(prompt or "", model, int(k))
        return [[[[t, p] for t, p in cell] for cell in row] for row in rows]

    gr.api(next_token_api, api_name="next_token", **GPU_EVENT)
    gr.api(logit_lens_api, api_name="logit_lens", **GPU_EVENT)


def _embeddings_section(settings: Settings) -> None:
    with gr.Accordion("Sentence similarity", open=True):
        with gr.Row():
            sentence_model = gr.Dropdown(
                model_choices(embeddings.SENTENCE_MODELS),
                value=embeddings.SENTENCE_MODEL,
                label="Sentence model",
                allow_custom_value=not settings.classroom,
            )
            sentences = gr.Textbox(
                SENTENCES, lines=6, label="Sentences, one per line", elem_id="emb-sentences"
            )
        similar_run = gr.Button("Compare", variant="primary", elem_id="emb-sim-run")
        similar_plot = gr.Plot(elem_id="emb-sim-plot")
        vector = gr.Markdown(elem_id="emb-vector")
    with gr.Accordion("A map of embeddings", open=False):
        with gr.Row():
            source = gr.Radio(
                ["vocabulary tokens (static)", "the sentences above"],
                value="vocabulary tokens (static)",
                label="What to map",
            )
            method = gr.Radio(["pca", "umap"], value="pca", label="Projection")
            token_model = gr.Dropdown(
                model_choices(embeddings.TOKEN_MODELS),
                value=embeddings.SENTENCE_MODEL,
                label="Model (for tokens)",
                allow_custom_value=not settings.classroom,
            )
        words = gr.Textbox(WORDS, lines=5, label="Words or tokens, one per line", elem_id="emb-words")
        map_run = gr.Button("Draw the map", elem_id="emb-map-run")
        map_plot = gr.Plot(elem_id="emb-map")
        with gr.Row():
            probe = gr.Textbox("king", label="Nearest neighbours of", elem_id="emb-probe")
            probe_run = gr.Button("Find neighbours", elem_id="emb-probe-run")
        neighbours_table = gr.HTML(elem_id="emb-neighbours")
    with gr.Accordion("Static versus contextual embeddings", open=False):
        gr.Markdown(
            "A model starts from one **static** vector per vocabulary token, the same in every "
            "sentence; its layers turn it into a **contextual** vector that depends on the words "
            "around it. Same word, different meanings: compare the two similarity matrices."
        )
        with gr.Row():
            word = gr.Textbox("bank", label="Word", elem_id="emb-word")
            word_model = gr.Dropdown(
                model_choices(embeddings.TOKEN_MODELS),
                value=embeddings.SENTENCE_MODEL,
                label="Model",
                allow_custom_value=not settings.classroom,
            )
        bank = gr.Textbox(BANK, lines=4, label="Sentences containing the word", elem_id="emb-bank")
        bank_run = gr.Button("Compare the word's vectors", elem_id="emb-bank-run")
        with gr.Row():
            static_plot = gr.Plot(elem_id="emb-static")
            contextual_plot = gr.Plot(elem_id="emb-contextual")
        bank_note = gr.Markdown(elem_id="emb-bank-note")

    @user_errors
    def compare(model_id: str, text: str) -> tuple[Any, str]:
        check_allowed(model_id, settings)
        lines = _lines(text)
        matrix = embeddings.similarity(lines, model_id)
        first = embeddings.describe(lines[0], model_id)
        described = (
            f"The vector of *{html.escape(lines[0])}*: shape {first.shape}, first values "
            f"{first.first}, norm {first.norm:.3f}."
        )
        return attention_view.matrix_heatmap(matrix, lines, f"Cosine similarity · {model_id}"), described

    @user_errors
    def draw_map(
        what: str, how: str, model_id: str, words_text: str, sentences_text: str, sentence_model_id: str
    ) -> Any:
        if what.startswith("the sentences"):
            check_allowed(sentence_model_id, settings)
            labels = _lines(sentences_text)
            vectors = embeddings.embed(labels, sentence_model_id)
            title = f"{len(labels)} sentences · {sentence_model_id} · {how.upper()}"
        else:
            check_allowed(model_id, settings)
            labels, vectors = embeddings.token_vectors(_lines(words_text), model_id)
            title = f"{len(labels)} static token embeddings · {model_id} · {how.upper()}"
        return scatter(embeddings.project(vectors, how), labels, title)

    @user_errors
    def find_neighbours(token: str, model_id: str) -> str:
        check_allowed(model_id, settings)
        rows = [[t, round(score, 3)] for t, score in embeddings.neighbours(token, model_id)]
        return render.table(
            ["token", "cosine"], rows, f"Closest to '{token}' in {model_id}'s input embeddings"
        )

    @user_errors
    def compare_bank(word_text: str, text: str, model_id: str) -> tuple[Any, Any, str]:
        check_allowed(model_id, settings)
        result = embeddings.compare_word(word_text, _lines(text), model_id)
        labels = [f"{i + 1}: {s}" for i, s in enumerate(result.sentences)]
        off = ~np.eye(len(labels), dtype=bool)
        note = (
            f"Static: all {result.static[off].mean():.2f} (one vector, whatever the sentence). "
            f"Contextual: mean {result.contextual[off].mean():.2f}, from {result.contextual[off].min():.2f} "
            f"to {result.contextual[off].max():.2f}. '{result.word}' became {result.pieces[0]} here."
        )
        return (
            attention_view.matrix_heatmap(result.static, labels, "Static (input) embedding"),
            attention_view.matrix_heatmap(result.contextual, labels, "Contextual (output) embedding"),
            note,
        )

    similar_run.click(
        compare, [sentence_model, sentences], [similar_plot, vector], api_visibility="private", **GPU_EVENT
    )
    map_run.click(
        draw_map,
        [source, method, token_model, words, sentences, sentence_model],
        map_plot,
        api_visibility="private",
        **GPU_EVENT,
    )
    probe_run.click(
        find_neighbours, [probe, token_model], neighbours_table, api_visibility="private", **GPU_EVENT
    )
    bank_run.click(
        compare_bank,
        [word, bank, word_model],
        [static_plot, contextual_plot, bank_note],
        api_visibility="private",
        **GPU_EVENT,
    )

    @user_errors
    def similarity_api(texts: list[str], model: str = embeddings.SENTENCE_MODEL) -> list[list[float]]:
        """Cosine similarity matrix of the texts' sentence embeddings."""
        check_allowed(model, settings)
        matrix = embeddings.similarity(list(texts or []), model)
        return np.round(matrix, 5).tolist()

    gr.api(similarity_api, api_name="similarity", **GPU_EVENT)
