"""Pictures of CLIP's numbers for the page (or a notebook): HTML and markdown strings, and gallery items.

Pure functions of the results of :mod:`lab.clip`: no Gradio and no model here. Gallery items are
``(file, caption)`` pairs whose files :func:`servable` has put where a web app may send them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab import catalog, models, render
from lab.clip.gallery import Added, Gallery, gallery_paths
from lab.clip.index import ImageIndex
from lab.clip.model import ClipModel, ClipTokens
from lab.clip.zero_shot import ZeroShot, clip_probabilities

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

STYLE = """
<style>
.lab-clip{font-family:ui-sans-serif,system-ui,sans-serif;color:#1f2328}
.lab-clip .toks{font-family:ui-monospace,monospace;font-size:13px;line-height:2.2}
.lab-clip .t{display:inline-block;border-radius:4px;padding:0 4px;margin:1px 2px 1px 0;white-space:pre}
.lab-clip .t.special{outline:2px solid #cf222e;font-weight:600;background:#fff}
.lab-clip .id{font-size:10px;color:#424a53;margin-left:3px;vertical-align:sub}
.lab-clip .note{font-size:12px;color:#57606a;margin:4px 0}
.lab-clip table.heat{border-collapse:collapse;font-size:13px;border:none;width:auto}
.lab-clip table.heat,.lab-clip table.heat tr,.lab-clip table.heat th,.lab-clip table.heat td.img{
  border:none !important;background:none}
.lab-clip table.heat th{font-weight:500;padding:4px 6px;max-width:170px;vertical-align:bottom;
  text-align:center}
.lab-clip table.heat td.cell{width:120px;height:76px;text-align:center;font-variant-numeric:tabular-nums;
  font-weight:600;border:2px solid #fff}
.lab-clip table.heat td.img{padding:2px 8px 2px 0;text-align:right;font-size:12px;color:#57606a}
.lab-clip table.heat img{width:72px;height:72px;object-fit:cover;border-radius:4px;vertical-align:middle}
</style>
"""

# viridis at five stops: low cosines dark purple, high ones yellow (the colours of the book's heat map).
VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


# -- the model -------------------------------------------------------------------------------------


def model_status(name: str, folder: str | None) -> str:
    """Markdown: where the weights of a CLIP come from, or why they are not here and how to get them."""
    try:
        source = models.source_of(name, "model", folder)
    except catalog.ModelUnavailable as error:
        command = catalog.fetch_command(name)
        message = html.escape(str(error)).replace(html.escape(command), f"`{command}`")
        return (
            f"⚠️ **Not available here.** {message}\n\n"
            "Meanwhile the gallery, CLIP's tokens and the image as the model sees it still work; or type "
            "the folder of a local copy above."
        )
    title = catalog.entry(name).title if catalog.is_known(name) else name
    return f"✓ **{html.escape(title)}**: weights from {html.escape(source.detail)}."


def facts_markdown(model: ClipModel) -> str:
    """Markdown: the model's sizes, and what its logit scale does to a cosine gap."""
    size = model.image_size
    return (
        f"**{html.escape(model.title)}** from {html.escape(str(model.source))} · on {model.device} in "
        f"{model.dtype}  \n"
        f"Embeddings have **{model.embed_dim}** dimensions; images enter at **{size}×{size}** pixels; "
        f"texts at most **{model.context_length}** tokens.  \n"
        f"Logit scale **{model.logit_scale:.1f}**: a probability is softmax(logit scale × cosine), so a "
        f"cosine gap of 0.05 becomes a factor of e^{model.logit_scale * 0.05:.1f} ≈ "
        f"{2.718281828 ** (model.logit_scale * 0.05):.0f}× in probability."
    )


def tokens_html(tokens: ClipTokens) -> str:
    """CLIP's tokens as chips with their ids; the start and end tokens outlined."""
    chips = []
    for index, (token, token_id) in enumerate(zip(tokens.tokens, tokens.ids)):
        special = index == 0 or index == len(tokens.ids) - 1
        colour = render.BOOK_COLOURS[index % len(render.BOOK_COLOURS)]
        style = "" if special else f' style="background:rgba({colour},0.55)"'
        chips.append(
            f'<span class="t{" special" if special else ""}"{style}>{html.escape(token)}'
            f'<span class="id">{token_id}</span></span>'
        )
    padding = tokens.context_length - len(tokens.ids)
    note = (
        f"{len(tokens.ids)} tokens of the {tokens.context_length} CLIP reads; the other {padding} are "
        "padding (id 0). Words end in &lt;/w&gt;."
    )
    if tokens.truncated:
        note = (
            f"<b>The text was cut</b>: CLIP reads {tokens.context_length} tokens at most, "
            "so only its beginning counts."
        )
    body = f'<div class="toks">{"".join(chips)}</div><div class="note">{note}</div>'
    return f'{STYLE}<div class="lab-clip">{body}</div>'


def no_tokenizer_html(error: Exception) -> str:
    """The tokens panel when the model's tokenizer is not here either."""
    return f'{STYLE}<div class="lab-clip note">No tokenizer here: {html.escape(str(error))}</div>'


# -- search results and the gallery ----------------------------------------------------------------


def servable(path: str) -> str:
    """A path a web app will serve: the file itself under the working or temporary folder, else a copy there.

    Gradio refuses to send files from elsewhere, and the lab may be started from another folder.
    """
    resolved = Path(path).resolve()
    # Gradio's own folder (GRADIO_TEMP_DIR) too: files there, students' private ones included, are served
    # where they are instead of being copied.
    served = [Path.cwd(), Path(tempfile.gettempdir()), *filter(None, [os.environ.get("GRADIO_TEMP_DIR")])]
    for allowed in (Path(folder).resolve() for folder in served):
        if resolved.is_relative_to(allowed):
            return str(resolved)
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / "llm-lab-clip" / digest / resolved.name
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolved, copy)
    return str(copy)


def gallery_items(gallery: Gallery | None) -> list[tuple[str, str]]:
    """Every image a reader can see, as ``(servable file, id)`` items of an image gallery."""
    return [(servable(path), name) for name, path in gallery_paths(gallery).items()]


def results_view(
    index: ImageIndex, scores: np.ndarray, k: int, paths: dict[str, str], model: ClipModel
) -> tuple[list[tuple[str, str]], str, list[str]]:
    """Top-k as gallery items, a table (rank, image, cosine, probability over the gallery) and their ids."""
    probabilities = dict(zip(index.ids, clip_probabilities(scores, model.logit_scale)))
    top = index.top(scores, k)
    items = [(servable(paths[i]), f"#{rank} · {i} · cos {s:.3f}") for rank, (i, s) in enumerate(top, 1)]
    rows = [[rank, i, f"{s:.4f}", f"{probabilities[i]:.1%}"] for rank, (i, s) in enumerate(top, 1)]
    table = render.table(
        ["rank", "image", "cosine", "probability"],
        rows,
        f"Top {len(top)} of {len(index)} images. Probability: softmax of {model.logit_scale:.0f} × cosine "
        "over the whole gallery.",
    )
    return items, table, [i for i, _ in top]


def bullets(lines: list[str], limit: int = 12) -> str:
    """A markdown list of at most ``limit`` lines, then how many more there were."""
    shown = [f"- {html.escape(line, quote=False)}" for line in lines[:limit]]  # file names, as uploaded
    if len(lines) > limit:
        shown.append(f"- … and {len(lines) - limit} more")
    return "\n".join(shown)


def upload_report(added: Added, total: int) -> str:
    """Markdown: how many images an upload added, which files were refused and why, and notes."""
    lines = [f"**Added {added.count} image{'s' if added.count != 1 else ''}** ({total} of yours in all)."]
    if added.problems:
        lines.append("Not added:\n" + bullets(added.problems))
    if added.notes:
        lines.append("Notes:\n" + bullets(added.notes))
    return "\n\n".join(lines)


# -- zero-shot and the matrix ----------------------------------------------------------------------


def zero_shot_frame(result: ZeroShot) -> pd.DataFrame:
    """``label``, ``probability`` columns, for a bar chart."""
    import pandas as pd

    return pd.DataFrame({"label": result.labels, "probability": result.probabilities})


def zero_shot_table(result: ZeroShot) -> str:
    """Each label's prompt, raw cosine, logit and probability, most probable first."""
    order = sorted(range(len(result.labels)), key=lambda i: -round(result.probabilities[i], 3))
    rows = [
        [
            result.labels[i],
            result.prompts[i],
            f"{result.cosines[i]:.4f}",
            f"{result.logit_scale * result.cosines[i]:.2f}",
            f"{result.probabilities[i]:.1%}",
        ]
        for i in order
    ]
    return render.table(
        ["label", "prompt", "cosine", "logit", "probability"],
        rows,
        f"Raw cosine next to the probability: softmax over labels of {result.logit_scale:.0f} × cosine.",
    )


def _colour(value: float, low: float, high: float) -> tuple[str, str]:
    """Background and text colour of a heat-map cell on the viridis scale."""
    t = 0.0 if high <= low else min(max((value - low) / (high - low), 0.0), 1.0)
    position = t * (len(VIRIDIS) - 1)
    i = min(int(position), len(VIRIDIS) - 2)
    frac = position - i
    rgb = [round(a + (b - a) * frac) for a, b in zip(VIRIDIS[i], VIRIDIS[i + 1])]
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", "#111" if t > 0.55 else "#fff"


def _thumbnail(path: str, size: int = 144) -> str:
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB")
        small.thumbnail((size, size))
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def matrix_html(matrix: Any, image_ids: list[str], paths: dict[str, str], captions: list[str]) -> str:
    """The book's images × captions table: thumbnails down the side, captions across, cosines coloured."""
    low, high = float(matrix.min()), float(matrix.max())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in captions)
    rows = []
    for i, image_id in enumerate(image_ids):
        cells = []
        for j in range(len(captions)):
            value = float(matrix[i, j])
            background, ink = _colour(value, low, high)
            cells.append(
                f'<td class="cell" data-row="{i}" data-col="{j}" '
                f'style="background:{background};color:{ink};border:2px solid #fff">'
                f"{value:.2f}</td>"
            )
        thumb = f'<img src="{_thumbnail(paths[image_id])}" alt="{html.escape(image_id)}">'
        label = f'<td class="img">{html.escape(image_id)} {thumb}</td>'
        rows.append(f"<tr>{label}{''.join(cells)}</tr>")
    note = (
        "Cosine similarity of each image (row) with each caption (column). In the book, with OpenAI's "
        "ViT-B/32, the diagonal is about 0.33 / 0.35 / 0.31 and the rest 0.08–0.19: each image is closest "
        "to its own caption."
    )
    return (
        f'{STYLE}<div class="lab-clip"><table class="heat">'
        f"<thead><tr><th></th>{head}</tr></thead>"
        f'<tbody>{"".join(rows)}</tbody></table><div class="note">{note}</div></div>'
    )
