"""Export: every figure as PNG and SVG, every table as CSV, every result as JSON, written as files.

The page's figures are plotly figures (drawn in the browser), PIL images (the attention model view) and
HTML with JavaScript (the head view). Plotly writes images only through kaleido and a browser, which a
server may not have, so :func:`plotly_to_matplotlib` redraws a plotly figure's traces (heat maps, bars,
lines and points, subplots and a second y axis) with matplotlib from the same numbers; the two attention
views get SVGs of their own (:func:`head_view_svg`, :func:`model_view_svg`). Nothing here imports a UI::

    from lab import export
    paths = export.write("similarity", figures={"heatmap": figure}, tables={"matrix": frame}, data=result)
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lab.attention import AttentionResult

EXPORTS = Path(tempfile.gettempdir()) / "llm-lab-exports"
KEEP_S = 3_600  # an export folder older than this is removed when a new one is made
Table = tuple[Sequence[str], Sequence[Sequence[Any]]]  # (headers, rows), or a pandas DataFrame


def new_folder(root: Path = EXPORTS, keep_s: float = KEEP_S) -> Path:
    """A fresh folder for one result's files, in the system's temporary folder (Gradio serves files from
    there); folders older than ``keep_s`` go, so exports never pile up on a long-running server."""
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - keep_s
    for old in root.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request removed it first
            continue
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


# Where :func:`write` puts a result's files when it is given no folder: a new folder under ``EXPORTS``. A
# served lab replaces it (``app.serve``: ``tabs.access.result_folder``) with folders that only the student
# whose result it is can read.
result_folder: Callable[[], Path] = new_folder


def picture(image: Any, name: str) -> str:
    """A picture the page shows (a PIL image) as ``<name>.png`` in a new result folder, so that it is served
    as the result's downloads are (on a served lab: to its owner only); returns the file's path."""
    path = result_folder() / f"{name}.png"
    image.convert("RGB").save(path)
    return str(path)


def write(
    stem: str,
    *,
    figures: Mapping[str, Any] | None = None,
    svgs: Mapping[str, str] | None = None,
    images: Mapping[str, Any] | None = None,
    tables: Mapping[str, Any] | None = None,
    data: Any = None,
    folder: Path | None = None,
) -> list[str]:
    """Write one result's files and return their paths: ``<stem>-<name>.png`` and ``.svg`` per figure
    (plotly, matplotlib or PIL), ``.png`` per image, ``.svg`` per ready SVG, ``.csv`` per table and
    ``<stem>.json``."""
    folder = folder or result_folder()
    paths: list[Path] = []
    for name, figure in (figures or {}).items():
        if figure is not None:
            paths += figure_files(figure, folder / f"{stem}-{name}")
    for name, image in (images or {}).items():  # PIL images that have an SVG of their own in ``svgs``
        image.convert("RGB").save(folder / f"{stem}-{name}.png")
        paths.append(folder / f"{stem}-{name}.png")
    for name, svg in (svgs or {}).items():
        paths.append(_write_text(folder / f"{stem}-{name}.svg", svg))
    for name, table in (tables or {}).items():
        if table is not None:
            paths.append(table_csv(table, folder / f"{stem}-{name}.csv"))
    if data is not None:
        paths.append(result_json(data, folder / f"{stem}.json"))
    return [str(path) for path in paths]


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- figures ---------------------------------------------------------------------------------------------


def figure_files(figure: Any, base: Path) -> list[Path]:
    """``base.png`` and ``base.svg`` of a plotly figure, a matplotlib figure or a PIL image."""
    png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
    if hasattr(figure, "save") and hasattr(figure, "mode"):  # a PIL image
        figure.convert("RGB").save(png)
        _write_text(svg, image_svg(np.asarray(figure.convert("RGB"))))
        return [png, svg]
    drawn = plotly_to_matplotlib(figure) if hasattr(figure, "to_plotly_json") else figure
    try:
        drawn.savefig(png, dpi=150, bbox_inches="tight")
        drawn.savefig(svg, bbox_inches="tight")
    finally:
        if drawn is not figure:
            import matplotlib.pyplot as plt

            plt.close(drawn)
    return [png, svg]


def _text(value: Any) -> str:
    """Plotly titles are strings or ``{"text": ...}``; its labels may hold ``<br>``."""
    if isinstance(value, dict):
        value = value.get("text")
    return str(value or "").replace("<br>", "\n").replace("<b>", "").replace("</b>", "")


def plotly_to_matplotlib(figure: Any) -> Any:
    """A matplotlib figure with the plotly figure's heat maps, bars and scatter traces, on the same axes.

    Axes are laid out from plotly's domains (so subplots keep their places), a y axis that overlays
    another becomes a twin axis, titles and axis titles are kept. Colours follow the traces where they
    name one; heat maps use viridis. What plotly adds for the browser (hover, buttons) has no image.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    spec = _plain(figure.to_plotly_json())
    layout = spec.get("layout", {})
    width = (layout.get("width") or 900) / 100
    height = (layout.get("height") or 500) / 100
    canvas = Figure(figsize=(width, max(height, 2.5)))
    axes: dict[tuple[str, str], Any] = {}

    def axis(xref: str, yref: str) -> Any:
        if (xref, yref) in axes:
            return axes[(xref, yref)]
        x_layout = layout.get(_axis_key("xaxis", xref), {})
        y_layout = layout.get(_axis_key("yaxis", yref), {})
        overlays = y_layout.get("overlaying")
        if overlays and (xref, overlays) in axes:
            ax = axes[(xref, overlays)].twinx()
        else:
            x0, x1 = x_layout.get("domain", [0, 1])
            y0, y1 = y_layout.get("domain", [0, 1])
            ax = canvas.add_axes(
                (0.08 + x0 * 0.88, 0.1 + y0 * 0.8, (x1 - x0) * 0.88 * 0.94, (y1 - y0) * 0.74)
            )
        ax.set_xlabel(_text(x_layout.get("title")))
        ax.set_ylabel(_text(y_layout.get("title")))
        if y_layout.get("autorange") == "reversed":
            ax.invert_yaxis()
        axes[(xref, yref)] = ax
        return ax

    for trace in spec.get("data", []):
        ax = axis(trace.get("xaxis", "x"), trace.get("yaxis", "y"))
        _draw_trace(ax, trace)
    if any(
        t.get("name") and t.get("showlegend", True)
        for t in spec.get("data", [])
        if t.get("type") != "heatmap"
    ):
        for ax in axes.values():
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    canvas.suptitle(_text(layout.get("title")), fontsize=11)
    return canvas


def _plain(value: Any) -> Any:
    """Plotly's JSON with its typed arrays (``{"dtype", "bdata", "shape"}``, base64) decoded to numpy."""
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            shape = value.get("shape")
            return array.reshape([int(n) for n in str(shape).split(",")]) if shape else array
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _axis_key(kind: str, ref: str) -> str:
    """Plotly's layout key of a trace's axis: ``x`` → ``xaxis``, ``x2`` → ``xaxis2``."""
    return kind + ref[1:]


def _draw_trace(ax: Any, trace: dict[str, Any]) -> None:
    kind = trace.get("type", "scatter")
    name = trace.get("name")
    marker = trace.get("marker") or {}
    colour = marker.get("color") if isinstance(marker.get("color"), str) else None
    if kind == "heatmap":
        z = np.asarray(trace.get("z"), dtype=float)
        image = ax.imshow(z, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.figure.colorbar(image, ax=ax, fraction=0.04)
        for setter, ticks, size in (
            (ax.set_xticks, trace.get("x"), z.shape[1]),
            (ax.set_yticks, trace.get("y"), z.shape[0]),
        ):
            if ticks is not None and len(ticks) == size and size <= 60:
                setter(range(size), [str(t) for t in ticks], fontsize=7)
        if trace.get("x") is not None and len(trace["x"]) == z.shape[1]:
            ax.tick_params(axis="x", labelrotation=60)
    elif kind == "bar":
        x, y = list(trace.get("x") or []), list(trace.get("y") or [])
        if trace.get("orientation") == "h":
            ax.barh([str(v) for v in y], x, color=colour, label=name)
        else:
            ax.bar([str(v) for v in x], y, color=colour, label=name)
            ax.tick_params(axis="x", labelrotation=60, labelsize=7)
    elif kind in ("scatter", "scattergl"):
        x, y = trace.get("x"), trace.get("y")
        if x is None or y is None:
            return
        mode = trace.get("mode") or "lines+markers"
        line = trace.get("line") or {}
        style = {"color": line.get("color") or colour, "label": name}
        if "lines" in mode:
            ax.plot(x, y, marker="o" if "markers" in mode else None, markersize=3, **style)
        elif "markers" in mode:
            colours = marker.get("color")
            many = (
                colours if isinstance(colours, list | tuple | np.ndarray) and len(colours) == len(x) else None
            )
            ax.scatter(x, y, s=8, c=many if many is not None else style["color"], label=name)
        if "text" in mode and trace.get("text") is not None:
            for px, py, label in zip(x, y, trace["text"]):
                ax.annotate(str(label), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")


def matrix_figure(matrix: Any, rows: Sequence[str], columns: Sequence[str], title: str) -> Any:
    """A heat map of a ``(rows, columns)`` matrix with labelled axes and each cell's value (matplotlib), for
    matrices the page draws as HTML."""
    import textwrap

    from matplotlib.figure import Figure

    values = np.asarray(matrix, dtype=np.float64)
    figure = Figure(figsize=(2.5 + 1.4 * len(columns), 1.5 + 0.55 * len(rows)))
    ax = figure.add_subplot()
    image = ax.imshow(values, cmap="viridis", aspect="auto", interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.04)
    ax.set_xticks(range(len(columns)), [textwrap.shorten(c, 40) for c in columns], rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [textwrap.shorten(r, 40) for r in rows])
    ax.tick_params(labelsize=8)
    middle = (values.min() + values.max()) / 2
    for (row, column), value in np.ndenumerate(values):
        ink = "black" if value > middle else "white"  # viridis is light at the top, dark at the bottom
        ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=ink)
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def image_svg(pixels: np.ndarray) -> str:
    """An SVG of an RGB image, one rectangle per run of equal pixels in a row (exact, no embedded PNG)."""
    height, width, _ = pixels.shape
    parts = [_svg_open(width, height)]
    for y in range(height):
        row = pixels[y]
        x = 0
        while x < width:
            end = x + 1
            while end < width and (row[end] == row[x]).all():
                end += 1
            r, g, b = (int(v) for v in row[x])
            if (r, g, b) != (255, 255, 255):
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{end - x}" height="1" fill="#{r:02x}{g:02x}{b:02x}"/>'
                )
            x = end
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_open(width: float, height: float) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="ui-monospace,monospace" font-size="12">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
    )


# -- the attention views, drawn from the weights ---------------------------------------------------------


def head_view_figure(result: AttentionResult, layer: int, heads: Sequence[int] | None = None) -> Any:
    """One layer's head view as a matplotlib figure: tokens attending (left) to tokens attended (right),
    one colour per head, a line's opacity its weight, as ``assets/js/head_view.js`` draws it."""
    import colorsys

    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    chosen = list(range(result.heads)) if heads is None else list(heads)
    count = len(result.tokens)
    figure = Figure(figsize=(6, 0.9 + 0.25 * count))
    ax = figure.add_axes((0.25, 0.02, 0.5, 0.9))
    ax.set_xlim(0, 1)
    ax.set_ylim(count - 0.5, -0.5)
    ax.axis("off")
    for index, token in enumerate(result.tokens):
        colour = "#cf222e" if result.special[index] else "#1f2328"
        for x, align in ((-0.02, "right"), (1.02, "left")):
            ax.text(x, index, token, ha=align, va="center", color=colour, family="monospace", fontsize=9)
    weights = np.asarray(result.weights[layer], dtype=np.float32)  # (heads, T, T)
    for head in chosen:
        hue = round(360 * head / result.heads) / 360
        rgb = colorsys.hls_to_rgb(hue, 0.45, 0.75)
        queries, keys = np.nonzero(weights[head] >= 0.01)
        segments = [[(0, q), (1, k)] for q, k in zip(queries, keys)]
        colours = [(*rgb, float(weights[head, q, k])) for q, k in zip(queries, keys)]
        ax.add_collection(LineCollection(segments, colors=colours, linewidths=1.5))
    figure.suptitle(f"{result.model} · layer {layer} · heads {', '.join(map(str, chosen))}", fontsize=9)
    return figure


def model_view_svg(result: AttentionResult, cell: int = 40, gap: int = 4, margin: int = 28) -> str:
    """Every layer (rows) and head (columns) as a small heat map, darker for more attention, each on its own
    scale (as the page's model view): one rectangle per weight that is not blank."""
    layers, heads, count = result.layers, result.heads, len(result.tokens)
    size = cell / max(count, 1)
    width, height = margin + heads * (cell + gap), margin + layers * (cell + gap)
    parts = [_svg_open(width, height)]
    for head in range(heads):
        parts.append(
            f'<text x="{margin + head * (cell + gap) + cell / 2}" y="16" text-anchor="middle">{head}</text>'
        )
    for layer in range(layers):
        top = margin + layer * (cell + gap)
        parts.append(f'<text x="4" y="{top + cell / 2 + 4}">{layer}</text>')
        for head in range(heads):
            left = margin + head * (cell + gap)
            weights = np.asarray(result.weights[layer, head], dtype=np.float32)
            scaled = weights / max(float(weights.max()), 1e-6)
            parts.append(f'<g transform="translate({left},{top})"><title>layer {layer}, head {head}</title>')
            for query, key in zip(*np.nonzero(scaled * 220 >= 1)):
                shade = int(255 - scaled[query, key] * 220)
                parts.append(
                    f'<rect x="{key * size:.2f}" y="{query * size:.2f}" width="{size:.2f}" '
                    f'height="{size:.2f}" fill="#{shade:02x}{shade:02x}ff"/>'
                )
            parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts)


# -- tables and results ----------------------------------------------------------------------------------


def table_csv(table: Any, path: Path) -> Path:
    """A table as CSV: a pandas DataFrame, or ``(headers, rows)``."""
    import csv

    if hasattr(table, "to_csv"):
        table.to_csv(path, index=False)
        return path
    headers, rows = table
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        writer.writerows(rows)
    return path


def jsonable(value: Any) -> Any:
    """Plain JSON values from numpy arrays and numbers, dataclasses, paths, tuples and DataFrames."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame: records
        return jsonable(value.to_dict(orient="records"))
    return value


def result_json(data: Any, path: Path) -> Path:
    """A result as indented JSON (see :func:`jsonable` for what converts)."""
    return _write_text(path, json.dumps(jsonable(data), indent=1, ensure_ascii=False))


# -- what each result of the lab exports -----------------------------------------------------------------


def tokenizer_files(results: Sequence[Any], statistics: Table) -> list[str]:
    """Tokenizer comparison: the statistics table, every token (CSV) and every tokenization (JSON)."""
    shown = [r for r in results if not r.error and not r.pending]
    rows = [[r.name, i, token, id_] for r in shown for i, (token, id_) in enumerate(zip(r.tokens, r.ids))]
    data = [
        {"name": r.name, "tokens": r.tokens, "ids": r.ids, "vocab_size": r.vocab_size, "method": r.method}
        for r in shown
    ]
    tables = {"statistics": statistics, "tokens": (["tokenizer", "position", "token", "id"], rows)}
    return write("tokens", tables=tables, data=data)


def boundaries_files(text: str, first: Any, second: Any, result: Any) -> list[str]:
    """Where two tokenizers cut a text: each offset where a token starts, and which cut there (CSV, JSON)."""
    cut_by = {**{o: "both" for o in result.both}, **{o: first.name for o in result.only_a}}
    cut_by |= {o: second.name for o in result.only_b}
    rows = [[offset, text[offset : offset + 1], cut_by[offset]] for offset in sorted(cut_by)]
    return write(
        "boundaries",
        tables={"boundaries": (["offset", "character", "token starts in"], rows)},
        data={"text": text, "a": first.name, "b": second.name, **dataclasses.asdict(result)},
    )


def chat_files(renderings: Sequence[Any]) -> list[str]:
    """A conversation through chat templates: every token (CSV) and each rendered text (JSON)."""
    rows = [
        [r.name, position, token, id_, special]
        for r in renderings
        for position, (token, id_, special) in enumerate(zip(r.tokens, r.ids, r.special))
    ]
    headers = ["tokenizer", "position", "token", "id", "special"]
    return write("chat-template", tables={"tokens": (headers, rows)}, data=list(renderings))


def attention_files(result: AttentionResult, layer: int = 0) -> list[str]:
    """Attention: the head view of ``layer`` and one head's heat map (PNG, SVG), the model view (PNG as
    on the page, SVG from the weights), the weights (JSON)."""
    from lab import attention_view

    return write(
        "attention",
        figures={
            f"head-view-layer-{layer}": head_view_figure(result, layer),
            "layer-0-head-0": attention_view.head_heatmap(result, 0, 0),
        },
        images={"model-view": attention_view.model_view(result)},
        svgs={"model-view": model_view_svg(result)},
        data={
            "model": result.model,
            "tokens": result.tokens,
            "causal": result.causal,
            "weights": np.round(np.asarray(result.weights, dtype=np.float32), 4),  # [layer][head][query][key]
        },
    )


def next_token_files(result: Any, figure: Any, settings: Mapping[str, Any]) -> list[str]:
    """Next-token distribution: the bar chart (PNG, SVG), the top-k table (CSV), the result (JSON)."""
    headers = ["token", "id", "probability", "after temperature and top-p", "in nucleus"]
    rows = list(zip(result.tokens, result.ids, result.raw, result.reshaped, result.in_nucleus))
    return write(
        "next-token",
        figures={"chart": figure},
        tables={"top-k": (headers, rows)},
        data={**settings, **dataclasses.asdict(result)},
    )


def logit_lens_files(
    rows: Sequence[Sequence[Sequence[tuple[str, float]]]], tokens: Sequence[str]
) -> list[str]:
    """Logit lens: each layer's top token at each position (CSV) and the whole table (JSON)."""
    flat = [
        [layer, position, tokens[position] if position < len(tokens) else "", token, probability]
        for layer, row in enumerate(rows)
        for position, cell in enumerate(row)
        for token, probability in cell[:1]
    ]
    headers = ["layer", "position", "input token", "top next token", "probability"]
    return write("logit-lens", tables={"lens": (headers, flat)}, data={"tokens": tokens, "rows": rows})


def matrix_table(rows: Sequence[str], columns: Sequence[str], matrix: Any) -> Table:
    """A labelled matrix as a table: a first column of row labels, one column per column label."""
    values = np.round(np.asarray(matrix, dtype=np.float64), 5)
    return ["", *columns], [[label, *row] for label, row in zip(rows, values.tolist())]


def structure_files(structure: Any, model: str) -> list[str]:
    """The model's structure: its module tree and the numbers beside it (JSON)."""
    return write("structure", data={"model": model, **dataclasses.asdict(structure)})


def similarity_files(sentences: Sequence[str], matrix: np.ndarray, figure: Any, model: str) -> list[str]:
    """Sentence similarity: the heat map (PNG, SVG), the matrix (CSV) and the result (JSON)."""
    return write(
        "similarity",
        figures={"heatmap": figure},
        tables={"matrix": matrix_table(sentences, sentences, matrix)},
        data={"model": model, "sentences": sentences, "cosine": np.round(matrix, 5)},
    )


def embedding_map_files(
    labels: Sequence[str], points: np.ndarray, figure: Any, asked: Mapping[str, Any]
) -> list[str]:
    """A map of embeddings: the map (PNG, SVG), each point's 2-D coordinates (CSV) and the result with
    what was asked (``asked``: model, projection, what was mapped) (JSON)."""
    points = np.round(np.asarray(points, dtype=np.float64), 5)  # (n, 2)
    rows = [[label, x, y] for label, (x, y) in zip(labels, points.tolist())]
    return write(
        "embedding-map",
        figures={"map": figure},
        tables={"points": (["label", "x", "y"], rows)},
        data={**asked, "labels": labels, "points": points},
    )


def neighbours_files(token: str, model: str, pairs: Sequence[tuple[str, float]]) -> list[str]:
    """A token's nearest neighbours in a model's input embeddings: the ranked tokens (CSV, JSON)."""
    rows = [[rank, neighbour, round(float(cosine), 5)] for rank, (neighbour, cosine) in enumerate(pairs, 1)]
    return write(
        "neighbours",
        tables={"neighbours": (["rank", "token", "cosine"], rows)},
        data={"model": model, "token": token, "neighbours": rows},
    )


def static_vs_contextual_files(result: Any, figures: Mapping[str, Any], model: str) -> list[str]:
    """One word across sentences: the static and contextual heat maps (PNG, SVG), both matrices (CSV),
    the result (JSON)."""
    numbered = [f"{i}: {sentence}" for i, sentence in enumerate(result.sentences, 1)]
    tables = {
        kind: matrix_table(numbered, numbered, getattr(result, kind)) for kind in ("static", "contextual")
    }
    return write(
        "static-vs-contextual",
        figures=figures,
        tables=tables,
        data={"model": model, **dataclasses.asdict(result)},
    )


def topic_files(
    run: Any,
    table: Any,
    figures: Mapping[str, Any] | None = None,
    *,
    stem: str = "topics",
    layout: bool = False,
) -> list[str]:
    """A topic fit: its figures (plotly or matplotlib; PNG, SVG), the topic table and each document's
    topic (CSV), the run's settings, topics and assignments (JSON). ``layout``: a map's files, so each
    document's 2-D map coordinates too (``x``, ``y`` in the documents table, ``coordinates`` in the JSON)."""
    titles = run.titles or [""] * len(run.topics)
    headers = ["document", "title", "topic"]
    rows = [[i, titles[i], t] for i, t in enumerate(run.topics)]
    info = run.info[[c for c in ("Topic", "Count", "Name") if c in run.info.columns]]
    data = {
        "params": run.params,
        "n_topics": run.n_topics,
        "outlier_share": run.outlier_share,
        "topics": info,
        "assignments": run.topics,
    }
    if layout:
        points = np.round(np.asarray(run.reduced_2d, dtype=np.float64), 5)  # (documents, 2)
        headers += ["x", "y"]
        rows = [[*row, x, y] for row, (x, y) in zip(rows, points.tolist())]
        data["coordinates"] = points
    tables = {"topics": table, "documents": (headers, rows)}
    return write(stem, figures=figures, tables=tables, data=data)


def topic_words_files(topic: int, name: str, words: Sequence[tuple[str, float]], figure: Any) -> list[str]:
    """One topic's words (``get_topic``): the bar chart (PNG, SVG), the words and weights (CSV, JSON)."""
    rows = [[word, round(float(weight), 6)] for word, weight in words]
    return write(
        f"topic-{topic}-words",
        figures={"words": figure},
        tables={"words": (["word", "c-TF-IDF weight"], rows)},
        data={"topic": topic, "name": name, "words": rows},
    )


def topic_search_files(query: str, found: Sequence[tuple[int, float, str]]) -> list[str]:
    """``find_topics``: the closest topics to a query (CSV, JSON)."""
    rows = [[topic, round(float(similarity), 5), name] for topic, similarity, name in found]
    return write(
        "topic-search",
        tables={"found": (["topic", "similarity", "name"], rows)},
        data={"query": query, "found": rows},
    )


def representations_files(table: Any, asked: Mapping[str, Any]) -> list[str]:
    """The representation comparison: the table (CSV) and, with what was asked, its rows (JSON)."""
    return write("topic-representations", tables={"representations": table}, data={**asked, "table": table})


def clip_search_files(hits: Sequence[tuple[str, float]], query: str, model: str) -> list[str]:
    """CLIP search: the ranked images (CSV) and the result (JSON)."""
    rows = [[rank, name, round(float(score), 5)] for rank, (name, score) in enumerate(hits, 1)]
    data = {"model": model, "query": query, "hits": rows}
    return write("clip-search", tables={"results": (["rank", "image", "cosine"], rows)}, data=data)


def clip_matrix_files(
    matrix: np.ndarray, image_ids: Sequence[str], captions: Sequence[str], model: str
) -> list[str]:
    """CLIP's images × captions matrix: the heat map (PNG, SVG), the matrix (CSV), the result (JSON)."""
    figure = matrix_figure(matrix, image_ids, captions, f"Cosine similarity of images and captions · {model}")
    return write(
        "clip-matrix",
        figures={"heatmap": figure},
        tables={"matrix": matrix_table(image_ids, captions, matrix)},
        data={"model": model, "images": image_ids, "captions": captions, "cosine": np.round(matrix, 5)},
    )


def zero_shot_files(result: Any, model: str) -> list[str]:
    """CLIP zero-shot: the probabilities as a bar chart (PNG, SVG), the table (CSV), the result (JSON)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 0.6 + 0.35 * len(result.labels)))
    ax = figure.add_axes((0.3, 0.15, 0.65, 0.75))
    ax.barh(result.labels, result.probabilities, color="#0969da")
    ax.invert_yaxis()
    ax.set_xlabel("probability")
    ax.set_title(f"Zero-shot · {model}", fontsize=9)
    rows = list(zip(result.labels, result.prompts, result.cosines, result.probabilities))
    headers = ["label", "prompt", "cosine", "probability"]
    return write(
        "zero-shot",
        figures={"chart": figure},
        tables={"labels": (headers, rows)},
        data={"model": model, **dataclasses.asdict(result)},
    )


def vision_chat_files(result: Mapping[str, Any]) -> list[str]:
    """BLIP-2: the caption or the conversation, with the prompt the model read (JSON; turns as CSV)."""
    turns = result.get("history") or []
    tables = {"conversation": (["question", "answer"], turns)} if turns else {}
    return write("blip2", tables=tables, data=result)


def finetune_files(snapshot: Mapping[str, Any], figure: Any) -> list[str]:
    """A fine-tuning run: the loss curve (PNG, SVG), losses per step (CSV), the run's state (JSON)."""
    losses = dict(snapshot.get("losses") or [])
    evals = dict(snapshot.get("eval_losses") or [])
    steps = sorted(set(losses) | set(evals))
    rows = [[step, losses.get(step), evals.get(step)] for step in steps]
    public = {key: value for key, value in snapshot.items() if key != "output_dir"}
    return write(
        "finetune",
        figures={"loss": figure},
        tables={"losses": (["step", "training loss", "held-out loss"], rows)},
        data=public,
    )


def finetune_preview_files(plan: Any, preview: Any) -> list[str]:
    """The check before a run: each previewed token and whether it counts for the loss (CSV), the plan
    and the preview (JSON; the settings without the server's output folder)."""
    rows = [
        [number, position, text, role]
        for number, example in enumerate(preview.examples)
        for position, (text, role) in enumerate(example.pieces)
    ]
    planned = jsonable(plan)
    planned["config"] = {k: v for k, v in planned["config"].items() if k != "output_dir"}
    return write(
        "finetune-preview",
        tables={"tokens": (["example", "position", "token", "for the loss"], rows)},
        data={"plan": planned, "preview": preview},
    )


def stability_files(name: str, table: Any = None, figure: Any = None, data: Any = None) -> list[str]:
    """One topic-stability measurement (``sweep``, ``seeds`` or ``outliers``): its figure (PNG, SVG), its
    table (CSV) and its rows (JSON)."""
    return write(f"topic-{name}", figures={name: figure}, tables={name: table}, data=data)
