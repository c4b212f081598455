"""Pictures of chapters 2–3: attention (the head view in HTML + bundled JavaScript, the model view as a PNG
grid of every layer and head, a single head as a heat map), the forward pass (next-token bars, the logit
lens, the structure, KV-cache timings) and embeddings (maps, similarity matrices, neighbours). No Gradio
here; a notebook can show them too."""

from __future__ import annotations

import base64
import html
import json
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from lab import models, paths, render
from lab.attention import AttentionResult, NextToken, Structure
from lab.errors import InputError

if TYPE_CHECKING:
    from lab.embeddings import StaticVsContextual, TextVector

HEAD_VIEW_JS = paths.JS / "head_view.js"

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Head view</title><style>
body{{font-family:ui-sans-serif,system-ui,sans-serif;margin:6px;color:#1f2328}}
.bar{{display:flex;gap:6px;align-items:center;flex-wrap:wrap;font-size:12px;margin-bottom:6px}}
.head{{min-width:24px;height:22px;border:2px solid;border-radius:4px;font-size:11px;cursor:pointer;
  background:#fff;color:#1f2328}}
.view{{display:flex;align-items:flex-start}}
.col{{width:150px;padding-top:8px;font-family:ui-monospace,monospace;font-size:12px}}
#left .tok{{text-align:right;padding-right:4px}} #right .tok{{padding-left:4px}}
.tok{{white-space:pre;overflow:hidden;text-overflow:ellipsis;line-height:18px;cursor:default}}
.tok:hover,.tok:focus,.tok.pinned{{background:#fff3b0}} .special{{color:#cf222e;font-weight:600}}
.tok:focus,.head:focus,button:focus{{outline:2px solid #0969da;outline-offset:1px}}
#follow{{font-size:12px;min-height:18px;margin:2px 0 4px 0}} #follow a{{margin-right:12px}}
.note{{font-size:12px;color:#57606a;margin:4px 0}}
</style></head><body>
<div class="bar"><b>{title}</b> · layer {layer} · heads (click to toggle):<span id="heads" role="group"
aria-label="Heads: each button shows or hides one head's lines"></span>
<button id="all">all</button><button id="none">none</button>
<label><input type="checkbox" id="sinks"> hide attention to special tokens and the first token</label></div>
<div class="note">{note}</div>
<div id="follow" aria-live="polite"></div>
<div class="view"><div class="col" id="left" role="listbox" aria-label="Tokens attending (queries)"></div>
<canvas id="lines" role="img" aria-label="Lines from each token on the left to the tokens it attends to on
the right; the tables under the model view give the numbers"></canvas>
<div class="col" id="right" role="listbox" aria-label="Tokens attended to (keys)"></div></div>
<script type="application/json" id="attention-data">{data}</script>
<script>{script}</script></body></html>"""


def head_view_page(result: AttentionResult, layer: int, follow: dict[str, Any] | None = None) -> str:
    """A complete HTML page for one layer's head view (for an ``<iframe srcdoc>``); ``follow``
    (:func:`lab.links.attention_follow`) adds each token's links to its neighbours and logit lens."""
    if not 0 <= layer < result.layers:
        raise InputError(f"{result.model} has layers 0 to {result.layers - 1}, not {layer}.")
    quantised = np.clip(np.rint(result.weights[layer] * 255), 0, 255).astype(np.uint8)  # (heads, T, T)
    data = {
        "tokens": result.tokens,
        "special": result.special,
        "causal": result.causal,
        "heads": result.heads,
        "layer": layer,
        "weights": base64.b64encode(quantised.tobytes()).decode("ascii"),
        "follow": follow,
    }
    note = (
        "Decoder: each token sees only itself and the tokens before it (the causal mask), so no line goes "
        "to a later token."
        if result.causal
        else "Encoder: every token attends to every token, before and after it."
    )
    note += (
        " Hover a token to isolate its lines; left is the token attending (query), right is attended (key)."
        " Keyboard: Tab to a token, arrow keys to move, Enter to keep its lines (and its links); on the head"
        " buttons, Enter or Space shows or hides a head."
    )
    # "</" would end the script element early; JSON allows the escaped form.
    payload = json.dumps(data).replace("</", "<\\/")
    return _PAGE.format(
        title=html.escape(result.model),
        layer=layer,
        note=html.escape(note),
        data=payload,
        script=HEAD_VIEW_JS.read_text(encoding="utf-8"),
    )


def iframe(page: str, height: int, title: str = "Interactive view") -> str:
    """Embed a page in an isolated iframe: Gradio's HTML component does not run scripts itself."""
    return (
        f'<iframe class="lab-frame" title="{html.escape(title)}" srcdoc="{html.escape(page, quote=True)}" '
        f'style="width:100%;height:{height}px;border:1px solid #d0d7de;border-radius:8px"></iframe>'
    )


def head_view(result: AttentionResult, layer: int, follow: dict[str, Any] | None = None) -> str:
    """The head view of one layer, ready for ``gr.HTML``."""
    height = min(2400, 120 + 18 * len(result.tokens))
    return iframe(head_view_page(result, layer, follow), height=height, title=f"Head view of layer {layer}")


GAP, MARGIN = 4, 28


def _cell(result: AttentionResult) -> int:
    """Side of one head's square: large for small models, smaller so 30 layers still fit a screen."""
    return max(16, min(40, 1000 // max(result.layers, result.heads)))


def model_view(result: AttentionResult) -> Image.Image:
    """Every layer (rows) and head (columns) as a small heat map: darker is more attention."""
    layers, heads = result.layers, result.heads
    CELL = _cell(result)  # noqa: N806 (a constant for this picture)
    width = MARGIN + heads * (CELL + GAP)
    height = MARGIN + layers * (CELL + GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for head in range(heads):
        draw.text((MARGIN + head * (CELL + GAP) + CELL // 2 - 4, 8), str(head), fill="#57606a")
    for layer in range(layers):
        draw.text((4, MARGIN + layer * (CELL + GAP) + CELL // 2 - 6), str(layer), fill="#57606a")
        for head in range(heads):
            weights = result.weights[layer, head]
            scaled = weights / max(float(weights.max()), 1e-6)  # each map on its own scale, like bertviz
            shade = (255 - scaled * 220).astype(np.uint8)
            rgb = np.stack([shade, shade, np.full_like(shade, 255)], axis=-1)
            tile = Image.fromarray(rgb, "RGB").resize((CELL, CELL), Image.NEAREST)
            canvas.paste(tile, (MARGIN + head * (CELL + GAP), MARGIN + layer * (CELL + GAP)))
    return canvas


def cell_at(result: AttentionResult, x: int, y: int) -> tuple[int, int] | None:
    """The (layer, head) under a click on the model view, or None between cells."""
    CELL = _cell(result)  # noqa: N806
    column, column_offset = divmod(x - MARGIN, CELL + GAP)
    row, row_offset = divmod(y - MARGIN, CELL + GAP)
    if x < MARGIN or y < MARGIN or column_offset >= CELL or row_offset >= CELL:
        return None
    if row >= result.layers or column >= result.heads:
        return None
    return int(row), int(column)


def matrix_heatmap(
    matrix: np.ndarray,
    labels: list[str],
    title: str,
    *,
    value: str = "cosine",
    colorscale: str = "Viridis",
    zmin: float = -0.2,
    zmax: float = 1.0,
    annotate: bool = True,
    axes: tuple[str, str] = ("", ""),
):
    """A square matrix over the same labels on both axes as a plotly heat map (cosine or attention)."""
    import plotly.graph_objects as go

    short = [label if len(label) <= 40 else label[:37] + "…" for label in labels]
    extra = {"text": np.round(matrix, 2), "texttemplate": "%{text}"} if annotate else {}
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=short,
            y=short,
            colorscale=colorscale,
            zmin=zmin,
            zmax=zmax,
            hovertemplate=f"%{{y}}<br>%{{x}}<br>{value} %{{z:.3f}}<extra></extra>",
            **extra,
        )
    )
    figure.update_layout(
        title=title,
        height=max(320, min(900, (14 if not annotate else 40) * len(labels) + 160)),
        yaxis={"autorange": "reversed", "title": axes[0]},
        xaxis={"title": axes[1]},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return figure


def head_heatmap(result: AttentionResult, layer: int, head: int):
    """One head as a heat map with the tokens on both axes."""
    labels = [f"{i}:{t.replace(' ', '·') or '∅'}" for i, t in enumerate(result.tokens)]
    weights = result.weights[layer, head].astype(np.float32)
    return matrix_heatmap(
        weights,
        labels,
        f"{result.model} · layer {layer} · head {head}",
        value="weight",
        colorscale="Blues",
        zmin=0,
        zmax=float(weights.max()) or 1.0,
        annotate=False,
        axes=("query (attending)", "key (attended)"),
    )


# -- the forward pass ------------------------------------------------------------------------------


def next_token_figure(result: NextToken, temperature: float, top_p: float):
    """The top tokens' probabilities before (grey) and after temperature and top-p (green: in the nucleus)."""
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


def prompt_tokens(prompt: str, model: str) -> list[str]:
    """The prompt's tokens, each decoded alone by the model's tokenizer (the logit lens's columns)."""
    tokenizer = models.tokenizer(model)
    return [tokenizer.decode([i]) for i in tokenizer(prompt)["input_ids"]]


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


def structure_summary(s: Structure) -> str:
    """Markdown: parameters, embedding matrix, layers and heads (grouped-query attention named)."""
    return (
        f"**{s.parameters:,} parameters** · embedding matrix {s.vocab_size:,} × {s.hidden_size} "
        f"(vocabulary × model dimension) · {s.layers} layers · {s.heads} attention heads · "
        f"{s.kv_heads} key/value heads" + (" (grouped-query attention)" if s.kv_heads < s.heads else "")
    )


def kv_timings(seconds: dict[bool, float], tokens: int) -> str:
    """Markdown table: the same generation with (``True``) and without (``False``) the KV cache."""
    with_cache, without = seconds[True], seconds[False]
    return (
        f"| | seconds | tokens/s |\n| --- | --- | --- |\n"
        f"| with KV cache | {with_cache:.2f} | {tokens / with_cache:.1f} |\n"
        f"| without | {without:.2f} | {tokens / without:.1f} |\n\n"
        f"Without the cache it took **{without / with_cache:.1f}×** as long."
    )


# -- embeddings ------------------------------------------------------------------------------------


def scatter(points: np.ndarray, labels: list[str], title: str):
    """Labelled points of a 2-D projection (a map of embeddings)."""
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


def vector_description(text: str, vector: TextVector) -> str:
    """Markdown: a sentence's vector, its shape, first values and norm."""
    return (
        f"The vector of *{html.escape(text)}*: shape {vector.shape}, first values "
        f"{vector.first}, norm {vector.norm:.3f}."
    )


def neighbours_table(token: str, model: str, pairs: list[tuple[str, float]]) -> str:
    """The tokens closest to ``token`` in a model's input embeddings, with their cosines."""
    rows = [[t, round(score, 3)] for t, score in pairs]
    return render.table(["token", "cosine"], rows, f"Closest to '{token}' in {model}'s input embeddings")


def static_vs_contextual(result: StaticVsContextual) -> tuple[Any, Any, str]:
    """The word's static and contextual similarity matrices over the sentences, and a note comparing them."""
    labels = [f"{i + 1}: {s}" for i, s in enumerate(result.sentences)]
    off = ~np.eye(len(labels), dtype=bool)
    note = (
        f"Static: all {result.static[off].mean():.2f} (one vector, whatever the sentence). "
        f"Contextual: mean {result.contextual[off].mean():.2f}, from {result.contextual[off].min():.2f} "
        f"to {result.contextual[off].max():.2f}. '{html.escape(result.word, quote=False)}' became "
        f"{html.escape(str(result.pieces[0]), quote=False)} here."
    )
    return (
        matrix_heatmap(result.static, labels, "Static (input) embedding"),
        matrix_heatmap(result.contextual, labels, "Contextual (output) embedding"),
        note,
    )
