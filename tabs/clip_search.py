"""Tab 4, chapter 9: CLIP search: text → image, image → image, zero-shot labels and the book's matrix."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from lab import catalog, clip, models, render
from lab.config import Settings
from lab.images import BadImage, max_pixels
from tabs.common import CPU_EVENT, GPU_EVENT, user_errors

INTRO = """
### Chapter 9 · Multimodal embeddings: CLIP
CLIP embeds images **and** texts into one vector space, so that a photo of a dog and the caption "a photo
of a dog" land close together; **cosine similarity** compares them. That is enough to search a gallery by
text or by image, and to classify an image against labels nobody trained it on (*zero-shot*). The gallery
holds the book's three images and the photos that ship with scikit-image; add your own below.
"""

CAPTIONS_HELP = "One caption per line (the book's three are the preset)."
LABELS_DEFAULT = "puppy\ncat\ncar\nrocket\ncup of coffee"
MATRIX_DEFAULT_IMAGES = list(clip.BOOK_CAPTIONS)

STYLE = """
<style>
.lab-clip{font-family:ui-sans-serif,system-ui,sans-serif;color:#1f2328}
.lab-clip .toks{font-family:ui-monospace,monospace;font-size:13px;line-height:2.2}
.lab-clip .t{display:inline-block;border-radius:4px;padding:0 4px;margin:1px 2px 1px 0;white-space:pre}
.lab-clip .t.special{outline:2px solid #cf222e;font-weight:600;background:#fff}
.lab-clip .id{font-size:10px;color:#57606a;margin-left:3px;vertical-align:sub}
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


# -- per-session gallery ---------------------------------------------------------------------------


@dataclass
class Session:
    """One reader's additions to the gallery (files in a temporary folder) and what they last saw."""

    folder: str | None = None
    uploads: list[tuple[str, str]] = field(default_factory=list)  # (id, path of the prepared JPEG)
    index: clip.ImageIndex | None = None
    index_of: tuple[str, int] | None = None  # (model key, number of uploads) the index was built for
    results: list[str] = field(default_factory=list)  # ids in the results gallery, in order


def _delete_session(session: Session | None) -> None:
    if session is not None and session.folder:
        shutil.rmtree(session.folder, ignore_errors=True)


_DEFAULT_INDEXES: dict[str, clip.ImageIndex] = {}  # the default gallery's index, per model, for everyone
_HANDLES: dict[tuple[str, str | None], clip.ClipModel] = {}
_LOCK = threading.Lock()


def default_index(model: clip.ClipModel) -> clip.ImageIndex:
    """The default gallery embedded with ``model``, built once per process and shared by every session."""
    with _LOCK:
        if model.key not in _DEFAULT_INDEXES:
            _DEFAULT_INDEXES[model.key] = clip.ImageIndex.build(clip.default_gallery(), model)
        return _DEFAULT_INDEXES[model.key]


def session_index(session: Session, model: clip.ClipModel) -> clip.ImageIndex:
    """The default gallery plus the session's own images; only the session's images are embedded here."""
    base = default_index(model)
    if not session.uploads:
        return base
    wanted = (model.key, len(session.uploads))
    if session.index is None or session.index_of != wanted:
        session.index = base.extend(session.uploads)
        session.index_of = wanted
    return session.index


def gallery_paths(session: Session | None) -> dict[str, str]:
    """Every image a session can see, id → file."""
    paths = {name: str(path) for name, path in clip.default_gallery()}
    if session is not None:
        paths.update(dict(session.uploads))
    return paths


def _servable(path: str) -> str:
    """A path Gradio will serve: the file itself under the working or temporary folder, else a copy there.

    Gradio refuses to send files from elsewhere, and the lab may be started from another folder.
    """
    resolved = Path(path).resolve()
    for allowed in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if resolved.is_relative_to(allowed):
            return str(resolved)
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / "llm-lab-clip" / digest / resolved.name
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolved, copy)
    return str(copy)


def _gallery_value(session: Session | None) -> list[tuple[str, str]]:
    return [(_servable(path), name) for name, path in gallery_paths(session).items()]


def _unique_id(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        stem, suffix = os.path.splitext(name)
        candidate, number = f"{stem} ({number}){suffix}", number + 1
    return candidate


def add_images(
    session: Session | None, files: list[str], limits: clip.UploadLimits
) -> tuple[Session, int, list[str], list[str]]:
    """Check, shrink and keep uploaded images (files or zips) for a session; nothing is embedded yet.

    Returns the session, how many images were added, the problems (one per refused file) and notes.
    """
    session = session or Session()
    room = limits.max_images - len(session.uploads)
    if room <= 0:
        raise gr.Error(
            f"Your gallery already holds {len(session.uploads)} added images, the most it takes. "
            "Clear them to add others."
        )
    candidates, problems = clip.read_uploads(files, dataclasses.replace(limits, max_images=room))
    if session.folder is None:
        session.folder = tempfile.mkdtemp(prefix="llm-lab-clip-")
    taken = set(gallery_paths(session))
    added, notes = 0, []
    for name, data in candidates:
        try:
            prepared = clip.prepare_image(data, name)
        except BadImage as error:
            problems.append(str(error))
            continue
        notes += prepared.notes
        image_id = _unique_id(name, taken)
        taken.add(image_id)
        # Kept as the JPEG that every later use reads, so its pixels (and hash) stay the same.
        path = Path(session.folder) / f"{len(session.uploads):04d}.jpg"
        prepared.image.save(path, "JPEG", quality=92)
        session.uploads.append((image_id, str(path)))
        added += 1
    return session, added, problems, notes


# -- presenting ------------------------------------------------------------------------------------


def _bullets(lines: list[str], limit: int = 12) -> str:
    shown = [f"- {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"- … and {len(lines) - limit} more")
    return "\n".join(shown)


def tokens_html(tokens: clip.ClipTokens) -> str:
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


def facts_markdown(model: clip.ClipModel) -> str:
    size = model.image_size
    return (
        f"**{model.title}** from {model.source} · on {model.device} in {model.dtype}  \n"
        f"Embeddings have **{model.embed_dim}** dimensions; images enter at **{size}×{size}** pixels; "
        f"texts at most **{model.context_length}** tokens.  \n"
        f"Logit scale **{model.logit_scale:.1f}**: a probability is softmax(logit scale × cosine), so a "
        f"cosine gap of 0.05 becomes a factor of e^{model.logit_scale * 0.05:.1f} ≈ "
        f"{2.718281828 ** (model.logit_scale * 0.05):.0f}× in probability."
    )


def _softmax(values: Any, scale: float) -> Any:
    import numpy as np

    logits = scale * np.asarray(values, dtype=np.float64)
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def results_view(
    index: clip.ImageIndex, scores: Any, k: int, paths: dict[str, str], model: clip.ClipModel
) -> tuple[list[tuple[str, str]], str, list[str]]:
    """Top-k as gallery items and a table: rank, image, cosine and the probability over the gallery."""
    probabilities = dict(zip(index.ids, _softmax(scores, model.logit_scale)))
    top = index.top(scores, k)
    items = [(_servable(paths[i]), f"#{rank} · {i} · cos {s:.3f}") for rank, (i, s) in enumerate(top, 1)]
    rows = [[rank, i, f"{s:.4f}", f"{probabilities[i]:.1%}"] for rank, (i, s) in enumerate(top, 1)]
    table = render.table(
        ["rank", "image", "cosine", "probability"],
        rows,
        f"Top {len(top)} of {len(index)} images. Probability: softmax of {model.logit_scale:.0f} × cosine "
        "over the whole gallery.",
    )
    return items, table, [i for i, _ in top]


def _choices() -> list[tuple[str, str]]:
    return [(f"{catalog.entry(m).title} · {m}", m) for m in clip.MODELS]


# -- the tab ---------------------------------------------------------------------------------------


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the CLIP tab inside ``demo`` (call it within ``with demo:`` and a ``gr.Tab``)."""
    limits = clip.UploadLimits.from_env()
    gr.Markdown(INTRO)
    with gr.Row():
        model_choice = gr.Dropdown(
            choices=_choices(),
            value=clip.DEFAULT_MODEL,
            label="CLIP model",
            info="Default: ViT-B/32 trained on LAION-2B. The book uses OpenAI's ViT-B/32.",
            elem_id="clip-model",
            scale=2,
        )
        folder = gr.Textbox(
            label="…or the folder of a local CLIP",
            placeholder="~/lab-models/laion--CLIP-ViT-B-32-laion2B-s34B-b79K",
            info="open_clip's Hub format (open_clip_config.json + safetensors) or a transformers CLIP.",
            interactive=not settings.classroom,
            visible=not settings.classroom,
            elem_id="clip-folder",
            scale=2,
        )
    status = gr.Markdown(elem_id="clip-status")
    session = gr.State(None, time_to_live=6 * 3600, delete_callback=_delete_session)

    with gr.Tabs():
        with gr.Tab("Text → image", id="clip-text"):
            with gr.Row():
                query = gr.Textbox(
                    value="a cat",
                    label="Search the gallery by text",
                    placeholder="a rocket launch, a cup of coffee, a puppy in the snow…",
                    elem_id="clip-query",
                    scale=4,
                )
                k = gr.Slider(1, 24, value=8, step=1, label="Results", scale=1, elem_id="clip-k")
            search = gr.Button("Search", variant="primary", elem_id="clip-search")
        with gr.Tab("Image → image", id="clip-image"):
            gr.Markdown(
                "Upload an image, or click any picture in the results or the gallery to find its neighbours."
            )
            with gr.Row():
                query_image = gr.Image(
                    type="filepath",
                    image_mode=None,  # the file as uploaded: lab.images opens it safely
                    sources=["upload", "clipboard"],
                    label="Query image",
                    height=240,
                    elem_id="clip-query-image",
                )
            image_search = gr.Button("Find similar images", variant="primary", elem_id="clip-image-search")
        with gr.Tab("Zero-shot labels", id="clip-zero-shot"):
            with gr.Row():
                zs_image = gr.Image(
                    value=str(clip.BOOK_IMAGES / "puppy.png"),
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    label="Image",
                    height=260,
                    elem_id="clip-zs-image",
                )
                with gr.Column():
                    labels = gr.Textbox(
                        value=LABELS_DEFAULT, lines=5, label="Labels (one per line)", elem_id="clip-labels"
                    )
                    template = gr.Textbox(
                        value=clip.TEMPLATE,
                        label="Prompt template ({} is replaced by each label)",
                        elem_id="clip-template",
                    )
                    classify = gr.Button("Classify", variant="primary", elem_id="clip-classify")
            with gr.Row():
                chart = gr.BarPlot(
                    x="label",
                    y="probability",
                    sort="-y",
                    y_lim=[0, 1],
                    label="Probability of each label",
                    elem_id="clip-chart",
                )
                zs_table = gr.HTML(elem_id="clip-zs-table")
        with gr.Tab("Similarity matrix (the book)", id="clip-matrix"):
            with gr.Row():
                matrix_images = gr.CheckboxGroup(
                    choices=list(gallery_paths(None)),
                    value=MATRIX_DEFAULT_IMAGES,
                    label="Images (rows)",
                    elem_id="clip-matrix-images",
                )
                captions = gr.Textbox(
                    value="\n".join(clip.BOOK_CAPTIONS.values()),
                    lines=4,
                    label="Captions (columns)",
                    info=CAPTIONS_HELP,
                    elem_id="clip-captions",
                )
            matrix_button = gr.Button(
                "Compare every image with every caption", variant="primary", elem_id="clip-matrix-run"
            )
            heat = gr.HTML(elem_id="clip-heat")
        with gr.Tab("Gallery: add your images", id="clip-gallery"):
            gr.Markdown(
                f"Add images (several files at once, or a zip): up to {limits.max_images} in your gallery, "
                f"each at most {limits.max_file_bytes / 2**20:.0f} MB and {max_pixels() / 1e6:.0f} "
                "megapixels, "
                f"{limits.max_bytes / 2**20:.0f} MB per upload (zips counted unpacked). Bad files are listed "
                "and skipped; the rest are added. Your images stay in your session only."
            )
            with gr.Row():
                uploads = gr.File(
                    file_count="multiple",
                    file_types=["image", ".zip"],
                    label="Images or a zip",
                    elem_id="clip-uploads",
                )
                with gr.Column():
                    add = gr.Button("Add to the gallery", variant="primary", elem_id="clip-add")
                    clear = gr.Button("Remove my images", elem_id="clip-clear")
            upload_status = gr.Markdown(elem_id="clip-upload-status")

    results = gr.Gallery(
        label="Results (click one to find its neighbours)",
        visible=False,  # until the first search
        columns=8,
        height=240,  # one row of eight; more results scroll
        object_fit="contain",
        elem_id="clip-results",
    )
    results_table = gr.HTML(elem_id="clip-results-table")
    with gr.Accordion("Under the hood: what CLIP reads", open=True), gr.Row():
        with gr.Column(scale=3):
            tokens_view = gr.HTML(label="CLIP's tokens of the query", elem_id="clip-tokens")
            facts = gr.Markdown(elem_id="clip-facts")
        model_view = gr.Image(
            label="What the vision tower sees",
            height=240,
            interactive=False,
            elem_id="clip-model-view",
        )
    browse = gr.Gallery(
        value=_gallery_value(None),
        label="The gallery (click an image to find its neighbours)",
        columns=8,
        height="auto",
        object_fit="cover",
        allow_preview=False,
        elem_id="clip-gallery-all",
    )

    # -- handlers ------------------------------------------------------------------------------------
    def chosen(choice: str | None, path: str | None) -> str:
        name = (path or "").strip() or choice or clip.DEFAULT_MODEL
        if settings.classroom and (path or "").strip():
            raise gr.Error("This classroom server only loads the lab's catalog models, not local folders.")
        if settings.classroom and name not in clip.MODELS:
            raise gr.Error(f"This classroom server only loads the lab's catalog models; {name} is not one.")
        return name

    def model_of(choice: str | None, path: str | None) -> clip.ClipModel:
        name = chosen(choice, path)
        key = clip.parse_name(name)
        if key not in _HANDLES:
            _HANDLES[key] = clip.load(name)
        return _HANDLES[key]

    @user_errors
    def show_status(choice: str | None, path: str | None) -> str:
        name, where = clip.parse_name(chosen(choice, path))
        try:
            source = models.source_of(name, "model", where)
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

    @user_errors
    def show_tokens(choice: str | None, path: str | None, text: str) -> str:
        if not (text or "").strip():
            return ""
        try:
            return tokens_html(clip.clip_tokens(clip.check_query(text), chosen(choice, path)))
        except catalog.ModelUnavailable as error:  # the search itself says so, in its own message
            return f'{STYLE}<div class="lab-clip note">No tokenizer here: {html.escape(str(error))}</div>'

    @user_errors
    def show_model_view(choice: str | None, path: str | None, image: str | None) -> Any:
        if not image:
            return None
        try:
            return clip.preprocessed_image(image, chosen(choice, path))
        except catalog.ModelUnavailable:  # the model's own event explains what is missing
            return None

    @user_errors
    def text_search(
        choice: str | None,
        path: str | None,
        text: str,
        count: float,
        state: Session | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[Any, str, str, Session]:
        text = clip.check_query(text)
        state = state or Session()
        model = model_of(choice, path)
        index = session_index(state, model)
        items, table, state.results = results_view(
            index, index.text_scores(text), int(count), gallery_paths(state), model
        )
        return gr.Gallery(value=items, visible=True), table, facts_markdown(model), state

    def _image_search(choice: str | None, path: str | None, image: str, count: float, state: Session | None):
        state = state or Session()
        model = model_of(choice, path)
        index = session_index(state, model)
        items, table, state.results = results_view(
            index, index.image_scores(image), int(count), gallery_paths(state), model
        )
        return gr.Gallery(value=items, visible=True), table, facts_markdown(model), state

    @user_errors
    def image_search_upload(
        choice: str | None,
        path: str | None,
        image: str | None,
        count: float,
        state: Session | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[Any, str, str, Session]:
        if not image:
            raise gr.Error("Upload a query image first, or click a picture in the gallery.")
        return _image_search(choice, path, image, count, state)

    def clicked(in_results: bool):
        """A click on a picture of the results (or of the gallery) searches with that image."""

        @user_errors
        def search_with_it(
            choice: str | None,
            path: str | None,
            count: float,
            state: Session | None,
            evt: gr.SelectData,
            progress: gr.Progress = gr.Progress(track_tqdm=True),
        ) -> tuple[Any, str, str, Session, str]:
            state = state or Session()
            paths = gallery_paths(state)
            shown = state.results if in_results else list(paths)
            if not 0 <= evt.index < len(shown) or shown[evt.index] not in paths:
                raise gr.Error("That picture is no longer in the gallery; search again.")
            picked = paths[shown[evt.index]]
            return (*_image_search(choice, path, picked, count, state), picked)

        return search_with_it

    @user_errors
    def zero_shot(
        choice: str | None, path: str | None, image: str | None, labels_text: str, template_text: str
    ) -> tuple[Any, str, str]:
        import pandas as pd

        if not image:
            raise gr.Error("Upload an image to classify.")
        model = model_of(choice, path)
        result = clip.classify(image, labels_text, model, template_text)
        frame = pd.DataFrame({"label": result.labels, "probability": result.probabilities})
        rows = [
            [label, prompt, f"{cos:.4f}", f"{model.logit_scale * cos:.2f}", f"{p:.1%}"]
            for label, prompt, cos, p in zip(
                result.labels, result.prompts, result.cosines, result.probabilities
            )
        ]
        rows.sort(key=lambda row: -float(row[4].rstrip("%")))
        table = render.table(
            ["label", "prompt", "cosine", "logit", "probability"],
            rows,
            f"Raw cosine next to the probability: softmax over labels of {model.logit_scale:.0f} × cosine.",
        )
        return frame, table, facts_markdown(model)

    @user_errors
    def matrix(
        choice: str | None,
        path: str | None,
        chosen_ids: list[str],
        captions_text: str,
        state: Session | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str]:
        texts = [line.strip() for line in (captions_text or "").splitlines() if line.strip()]
        if not texts:
            raise gr.Error("Write at least one caption, one per line.")
        paths = gallery_paths(state)
        ids = [i for i in chosen_ids or [] if i in paths]
        if not ids:
            raise gr.Error("Choose at least one image for the rows.")
        model = model_of(choice, path)
        values = clip.similarity_matrix([(i, paths[i]) for i in ids], texts, model)
        return matrix_html(values, ids, paths, texts), facts_markdown(model)

    @user_errors
    def add_uploads(files: list[str] | None, state: Session | None) -> tuple[Any, str, Session | None, Any]:
        if not files:
            raise gr.Error("Choose image files or a zip first.")
        state, added, problems, notes = add_images(state, list(files), limits)
        if problems:
            gr.Warning(f"{len(problems)} file(s) could not be added; the list is under the upload box.")
        lines = [
            f"**Added {added} image{'s' if added != 1 else ''}** ({len(state.uploads)} of yours in all)."
        ]
        if problems:
            lines.append("Not added:\n" + _bullets(problems))
        if notes:
            lines.append("Notes:\n" + _bullets(notes))
        choices = gr.update(choices=list(gallery_paths(state)))
        return _gallery_value(state), "\n\n".join(lines), state, choices

    def embed_uploads(
        choice: str | None,
        path: str | None,
        state: Session | None,
        note: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> str:
        """Embed the session's images now (with a progress bar), so the next search is immediate."""
        if state is None or not state.uploads:
            return note
        try:
            index = session_index(state, model_of(choice, path))
        except (catalog.ModelUnavailable, ValueError) as error:
            return f"{note}\n\nThey will be embedded when a model is available: {html.escape(str(error))}"
        return f"{note}\n\nEmbedded: the gallery now holds {len(index)} images."

    def clear_uploads(state: Session | None) -> tuple[Any, str, Session | None, Any]:
        _delete_session(state)
        return (
            _gallery_value(None),
            "Your images were removed.",
            None,
            gr.update(choices=list(gallery_paths(None))),
        )

    # -- wiring --------------------------------------------------------------------------------------
    private = {"api_visibility": "private"}
    model_inputs = [model_choice, folder]
    demo.load(show_status, model_inputs, status, **private, **CPU_EVENT)
    # The under-the-hood panel needs no weights: fill it at once, even where the model is missing.
    demo.load(show_tokens, [*model_inputs, query], tokens_view, **private, **CPU_EVENT)
    demo.load(show_model_view, [*model_inputs, zs_image], model_view, **private, **CPU_EVENT)
    model_choice.change(show_status, model_inputs, status, **private, **CPU_EVENT)
    folder.submit(show_status, model_inputs, status, **private, **CPU_EVENT)
    folder.blur(show_status, model_inputs, status, **private, **CPU_EVENT)

    search_outputs = [results, results_table, facts, session]
    for trigger in (search.click, query.submit):
        trigger(text_search, [*model_inputs, query, k, session], search_outputs, **private, **GPU_EVENT)
        trigger(show_tokens, [*model_inputs, query], tokens_view, **private, **CPU_EVENT)
    image_search.click(
        image_search_upload, [*model_inputs, query_image, k, session], search_outputs, **private, **GPU_EVENT
    )
    image_search.click(show_model_view, [*model_inputs, query_image], model_view, **private, **CPU_EVENT)
    for picture, in_results in ((results, True), (browse, False)):
        picture.select(
            clicked(in_results),
            [*model_inputs, k, session],
            [*search_outputs, query_image],
            **private,
            **GPU_EVENT,
        ).then(show_model_view, [*model_inputs, query_image], model_view, **private, **CPU_EVENT)
    classify.click(
        zero_shot,
        [*model_inputs, zs_image, labels, template],
        [chart, zs_table, facts],
        **private,
        **GPU_EVENT,
    )
    classify.click(show_model_view, [*model_inputs, zs_image], model_view, **private, **CPU_EVENT)
    matrix_button.click(
        matrix, [*model_inputs, matrix_images, captions, session], [heat, facts], **private, **GPU_EVENT
    )
    add.click(
        add_uploads,
        [uploads, session],
        [browse, upload_status, session, matrix_images],
        **private,
        **CPU_EVENT,
    ).then(embed_uploads, [*model_inputs, session, upload_status], upload_status, **private, **GPU_EVENT)
    clear.click(
        clear_uploads, session, [browse, upload_status, session, matrix_images], **private, **CPU_EVENT
    )

    # -- public API ----------------------------------------------------------------------------------
    def api_file(value: Any, what: str) -> str:
        """The server-side path of a file sent with ``gradio_client.handle_file`` (Gradio checked it)."""
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            return value["path"]
        raise gr.Error(f"Send {what} as a file: gradio_client.handle_file('picture.jpg').")

    def clip_search(query: str, k: int = 8, model: str = clip.DEFAULT_MODEL) -> list[dict[str, Any]]:
        """Search the default gallery (the book's images and scikit-image's photos) by text.

        Returns the `k` best images, best first: rank, id (the file name) and cosine similarity.
        """
        found = default_index(model_of(model, None)).search_text(query, int(k))
        return [{"rank": rank, "id": i, "cosine": s} for rank, (i, s) in enumerate(found, start=1)]

    def clip_zero_shot(
        image: gr.FileData, labels: list[str], template: str = clip.TEMPLATE, model: str = clip.DEFAULT_MODEL
    ) -> dict[str, float]:
        """Zero-shot classification of `image` against `labels`: {label: probability}, summing to 1.

        Each label fills the `{}` of `template`; probabilities are the softmax of the model's logit scale
        times the cosine similarity of image and prompt.
        """
        return clip.zero_shot(api_file(image, "the image"), labels, model_of(model, None), template)

    def clip_matrix(
        captions: list[str] | None = None,
        images: list[gr.FileData] | None = None,
        model: str = clip.DEFAULT_MODEL,
    ) -> dict[str, Any]:
        """The book's similarity matrix: cosine of every image (rows) with every caption (columns).

        Defaults: the book's puppy, cat and car images and their captions.
        """
        if images:
            sources = [(f"image {n}", api_file(image, "each image")) for n, image in enumerate(images, 1)]
        else:
            sources = [(name, str(clip.BOOK_IMAGES / name)) for name in clip.BOOK_CAPTIONS]
        texts = list(captions or clip.BOOK_CAPTIONS.values())
        values = clip.similarity_matrix(sources, texts, model_of(model, None))
        return {"images": [name for name, _ in sources], "captions": texts, "matrix": values.tolist()}

    for endpoint in (clip_search, clip_zero_shot, clip_matrix):
        gr.api(user_errors(endpoint), api_name=endpoint.__name__, **GPU_EVENT)
