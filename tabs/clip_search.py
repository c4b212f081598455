"""Tab 4, chapter 9: CLIP search: text → image, image → image, zero-shot labels and the book's matrix.

Layout and wiring only: the galleries live in :mod:`lab.clip.gallery`, the pictures in :mod:`lab.clip.view`.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from lab import catalog, clip, export, snippets, validate
from lab.clip import view
from lab.config import Settings
from lab.errors import LabError
from lab.images import max_pixels
from tabs import access
from tabs import links as page_links
from tabs.common import api, in_batch, model_choices, model_turn, on, slider
from tabs.export import code_panel

INTRO = """
## Chapter 9 · Multimodal embeddings: CLIP
CLIP embeds images **and** texts into one vector space, so that a photo of a dog and the caption "a photo
of a dog" land close together; **cosine similarity** compares them. That is enough to search a gallery by
text or by image, and to classify an image against labels nobody trained it on (*zero-shot*). The gallery
holds the book's three images and the photos that ship with scikit-image; add your own below.
"""

CAPTIONS_HELP = "One caption per line (the book's three are the preset)."
LABELS_DEFAULT = "puppy\ncat\ncar\nrocket\ncup of coffee"
MATRIX_DEFAULT_IMAGES = list(clip.BOOK_CAPTIONS)
Mine = clip.Gallery | None  # a reader's own images, in their session; None until they add some


def _delete_gallery(gallery: Mine) -> None:
    """When a session ends, its images go too (and its private folder is forgotten)."""
    if gallery is not None:
        access.PRIVATE.delete(gallery.folder)
        gallery.delete()


MAX_MATRIX_IMAGES = 24  # rows of the similarity matrix sent through the API


def _file_path(value: Any, what: str) -> str:
    """The server-side path of a file sent with ``gradio_client.handle_file`` (Gradio checked it)."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return value["path"]
    if value is None:
        raise gr.Error(f"No image was sent: send {what} as a file, gradio_client.handle_file('picture.jpg').")
    raise gr.Error(f"Send {what} as a file: gradio_client.handle_file('picture.jpg').")


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the CLIP tab inside ``demo`` (call it within ``with demo:`` and a ``gr.Tab``)."""
    limits = clip.UploadLimits.from_env()
    galleries = clip.Galleries()  # the default gallery's index per model, shared by every reader
    gr.Markdown(INTRO)
    with gr.Row():
        model_choice = gr.Dropdown(
            choices=model_choices(list(clip.MODELS)),
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
    session = access.session_state(None, settings, delete_callback=_delete_gallery)

    with gr.Tabs() as sections:
        with gr.Tab("Text → image", id="clip-text"):
            with gr.Row():
                query = gr.Textbox(
                    value="a cat",
                    label="Search the gallery by text",
                    placeholder="a rocket launch, a cup of coffee, a puppy in the snow…",
                    elem_id="clip-query",
                    scale=4,
                )
                k = slider("clip_k", "Results", scale=1, elem_id="clip-k")
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
            find_similar = gr.Button("Find similar images", variant="primary", elem_id="clip-image-search")
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
                zs_panel = code_panel("clip-zs")
        with gr.Tab("Similarity matrix (the book)", id="clip-matrix"):
            with gr.Row():
                matrix_images = gr.CheckboxGroup(
                    choices=list(clip.gallery_paths(None)),
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
            matrix_panel = code_panel("clip-matrix")
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
    panel = code_panel("clip")
    with gr.Accordion("Under the hood: what CLIP reads", open=True), gr.Row():
        with gr.Column(scale=3):
            tokens_view = gr.HTML(label="CLIP's tokens of the query", elem_id="clip-tokens")
            facts = gr.Markdown(elem_id="clip-facts")
        model_view = gr.Image(
            label="What the vision tower sees",
            alt_text="The image as CLIP's vision tower receives it, resized and cropped to its input size",
            height=240,
            interactive=False,
            elem_id="clip-model-view",
        )
    browse = gr.Gallery(
        value=view.gallery_items(None),
        label="The gallery (click an image to find its neighbours)",
        columns=8,
        height="auto",
        object_fit="cover",
        allow_preview=False,
        elem_id="clip-gallery-all",
    )

    # -- handlers ------------------------------------------------------------------------------------
    def chosen(choice: str | None, path: str | None) -> str:
        return clip.chosen_model(choice, path, classroom=settings.classroom)

    def model_of(choice: str | None, path: str | None) -> clip.ClipModel:
        return galleries.model(chosen(choice, path))

    def show_status(choice: str | None, path: str | None) -> str:
        """Inputs: model choice, folder. Outputs: the model's status (markdown)."""
        return view.model_status(*clip.parse_name(chosen(choice, path)))

    def show_tokens(choice: str | None, path: str | None, text: str) -> str:
        """Inputs: model choice, folder, query. Outputs: CLIP's tokens of the query (HTML)."""
        if not (text or "").strip():
            return ""
        try:
            return view.tokens_html(clip.clip_tokens(clip.check_query(text), chosen(choice, path)))
        except catalog.ModelUnavailable as error:  # the search itself says so, in its own message
            return view.no_tokenizer_html(error)

    def show_model_view(choice: str | None, path: str | None, image: str | None) -> Any:
        """Inputs: model choice, folder, an image. Outputs: the image as the vision tower sees it."""
        if not image:
            return None
        try:
            return clip.preprocessed_image(image, chosen(choice, path))
        except catalog.ModelUnavailable:  # the model's own event explains what is missing
            return None

    def shown(
        index: clip.ImageIndex,
        scores: Any,
        count: float,
        state: clip.Gallery,
        model: clip.ClipModel,
        asked: tuple[str, str, str],
    ) -> tuple[Any, ...]:
        """The results of a query's ``scores``, their ids kept in ``state`` (for clicks on them), and their
        code and downloads; ``asked`` is (the model as chosen, the query, ``"text"`` or ``"image"``)."""
        name, query, by = asked
        items, table, state.results = view.results_view(index, scores, int(count), state.paths(), model)
        hits = index.top(scores, int(count))
        own = len(state.uploads)
        code = snippets.clip_search(name, str(query), int(count), by=by, own_images=own)
        files = export.clip_search_files(hits, str(query), model.name)
        return gr.Gallery(value=items, visible=True), table, view.facts_markdown(model), state, code, files

    def search_with(choice: str | None, path: str | None, image: str, count: float, state: Mine) -> tuple:
        """The results of an image query over the reader's gallery (in a whole turn of the model queue)."""
        state = state or clip.Gallery()
        model = model_of(choice, path)
        index = galleries.index(state, model)
        asked = (chosen(choice, path), image, "image")
        return shown(index, index.image_scores(image), count, state, model, asked)

    def ready(choice: str | None, path: str | None, state: Mine) -> tuple[clip.ClipModel, clip.ImageIndex]:
        """The model and the reader's index; built in a whole turn of the model queue the first time."""
        name = chosen(choice, path)
        if galleries.built(name, state):
            model = galleries.model(name)
            return model, galleries.index(state, model)
        with model_turn("clip_search · index"):
            model = galleries.model(name)
            return model, galleries.index(state, model)

    def query_vector(query: str, model: clip.ClipModel) -> Any:
        """The text tower's vector of a query, batched with other readers' queries for the same model."""
        prepared = clip.TextQuery.prepare(query, model)
        return in_batch("clip_text", prepared.batch_key, prepared, clip.embed_queries)

    def text_search(
        choice: str | None,
        path: str | None,
        query: str | None,
        count: float,
        state: Mine,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[Any, ...]:
        """Inputs: model, folder, text, k, gallery. Outputs: results, table, facts, gallery."""
        query = clip.check_query(query or "")
        state = state or clip.Gallery()
        model, index = ready(choice, path, state)
        asked = (chosen(choice, path), query, "text")
        return shown(index, index.vector_scores(query_vector(query, model)), count, state, model, asked)

    def image_search(
        choice: str | None,
        path: str | None,
        query: str | None,
        count: float,
        state: Mine,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[Any, ...]:
        """Inputs: model, folder, image, k, gallery. Outputs: results, table, facts, gallery."""
        if not query:
            raise gr.Error("Upload a query image first, or click a picture in the gallery.")
        return search_with(choice, path, query, count, state)

    def clicked(in_results: bool):
        """A click on a picture of the results (or of the gallery) searches with that image."""

        def search_with_it(
            choice: str | None,
            path: str | None,
            count: float,
            state: Mine,
            evt: gr.SelectData,
            progress: gr.Progress = gr.Progress(track_tqdm=True),
        ) -> tuple[Any, ...]:
            """Inputs: model, folder, k, gallery, a click. Outputs: results, table, facts, gallery, query."""
            paths = clip.gallery_paths(state)
            shown = (state.results if state else []) if in_results else list(paths)
            if not 0 <= evt.index < len(shown) or shown[evt.index] not in paths:
                raise gr.Error("That picture is no longer in the gallery; search again.")
            picked = paths[shown[evt.index]]
            return (*search_with(choice, path, picked, count, state), picked)

        return search_with_it

    def zero_shot(
        choice: str | None, path: str | None, image: str | None, labels_text: str, template_text: str
    ) -> tuple[Any, ...]:
        """Inputs: model, folder, image, labels, template. Outputs: bar chart, table, model facts, code,
        downloads."""
        if not image:
            raise gr.Error("Upload an image to classify.")
        model = model_of(choice, path)
        result = clip.classify(image, labels_text, model, template_text)
        code = snippets.zero_shot(
            chosen(choice, path), image, result.labels, clip.check_template(template_text)
        )
        return (
            view.zero_shot_frame(result),
            view.zero_shot_table(result),
            view.facts_markdown(model),
            code,
            export.zero_shot_files(result, model.name),
        )

    def matrix(
        choice: str | None,
        path: str | None,
        chosen_ids: list[str],
        captions_text: str,
        state: Mine,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> tuple[str, str, str, list[str]]:
        """Inputs: model, folder, image ids, captions, gallery. Outputs: the heat map, model facts, code,
        downloads."""
        texts = [line.strip() for line in (captions_text or "").splitlines() if line.strip()]
        if not texts:
            raise gr.Error("Write at least one caption, one per line.")
        paths = clip.gallery_paths(state)
        ids = [i for i in chosen_ids or [] if i in paths]
        if not ids:
            raise gr.Error("Choose at least one image for the rows.")
        model = model_of(choice, path)
        values = clip.similarity_matrix([(i, paths[i]) for i in ids], texts, model)
        shipped = clip.gallery_paths(None)
        own = {i: paths[i] for i in ids if i not in shipped}  # the reader's uploads: no id outside the page
        return (
            view.matrix_html(values, ids, paths, texts),
            view.facts_markdown(model),
            snippets.clip_matrix(chosen(choice, path), ids, texts, own),
            export.clip_matrix_files(values, ids, texts, model.name),
        )

    def add_uploads(files: list[str] | None, state: Mine, request: gr.Request) -> tuple[Any, ...]:
        """Inputs: files, gallery. Outputs: the gallery's pictures, a report, gallery, matrix rows, the
        emptied upload box.

        The images are kept in a private folder of the student's (served to their login only); the
        uploaded files are deleted once read."""
        if not files:
            raise gr.Error("Choose image files or a zip first.")
        state = state or clip.Gallery()
        if state.folder is None:
            state.folder = str(access.private_folder(request))
        try:
            added = state.add(list(files), limits)
        finally:
            for file in files:
                access.delete_upload(file)
        if added.problems:
            gr.Warning(f"{len(added.problems)} file(s) could not be added; the list is under the upload box.")
        report = view.upload_report(added, len(state.uploads))
        items = view.gallery_items(state)
        return items, report, state, gr.update(choices=list(state.paths())), None

    def embed_uploads(
        choice: str | None,
        path: str | None,
        state: Mine,
        note: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> str:
        """Inputs: model, folder, gallery, the upload report. Outputs: the report, saying what was embedded.

        Embeds the reader's images now (with a progress bar), so the next search is immediate."""
        if state is None or not state.uploads:
            return note
        try:
            index = galleries.index(state, model_of(choice, path))
        except LabError as error:
            return f"{note}\n\nThey will be embedded when a model is available: {html.escape(str(error))}"
        return f"{note}\n\nEmbedded: the gallery now holds {len(index)} images."

    def clear_uploads(state: Mine) -> tuple[Any, ...]:
        """Inputs: gallery. Outputs: the default gallery's pictures, a report, no gallery, matrix rows."""
        _delete_gallery(state)
        choices = gr.update(choices=list(clip.gallery_paths(None)))
        return view.gallery_items(None), "Your images were removed.", None, choices

    # -- wiring --------------------------------------------------------------------------------------
    model_inputs = [model_choice, folder]
    # The under-the-hood panel needs no weights: fill it at once, even where the model is missing.
    on(demo.load, show_status, model_inputs, status)
    on(demo.load, show_tokens, [*model_inputs, query], tokens_view)
    on(demo.load, show_model_view, [*model_inputs, zs_image], model_view)
    for trigger in (model_choice.change, folder.submit, folder.blur):
        on(trigger, show_status, model_inputs, status)

    search_outputs = [results, results_table, facts, session, *panel.outputs]
    for trigger in (search.click, query.submit):
        text_inputs = [*model_inputs, query, k, session]
        on(trigger, text_search, text_inputs, search_outputs, gpu=True, batched=True)
        on(trigger, show_tokens, [*model_inputs, query], tokens_view)
    by_image = [*model_inputs, query_image, k, session]
    on(find_similar.click, image_search, by_image, search_outputs, gpu=True)
    on(find_similar.click, show_model_view, [*model_inputs, query_image], model_view)
    for picture, in_results in ((results, True), (browse, False)):
        outputs = [*search_outputs, query_image]
        picked = on(picture.select, clicked(in_results), [*model_inputs, k, session], outputs, gpu=True)
        on(picked.then, show_model_view, [*model_inputs, query_image], model_view)
    zs_inputs = [*model_inputs, zs_image, labels, template]
    on(classify.click, zero_shot, zs_inputs, [chart, zs_table, facts, *zs_panel.outputs], gpu=True)
    on(classify.click, show_model_view, [*model_inputs, zs_image], model_view)
    matrix_inputs = [*model_inputs, matrix_images, captions, session]
    on(matrix_button.click, matrix, matrix_inputs, [heat, facts, *matrix_panel.outputs], gpu=True)
    upload_outputs = [browse, upload_status, session, matrix_images]
    # Callable by gradio_client too (undocumented), as the page calls it: its tests use two clients.
    added = on(
        add.click,
        add_uploads,
        [uploads, session],
        [*upload_outputs, uploads],
        api_name="clip_gallery_add",
        api_visibility="undocumented",
    )
    on(added.then, embed_uploads, [*model_inputs, session, upload_status], upload_status, gpu=True)
    on(clear.click, clear_uploads, session, upload_outputs)

    # -- links: the model, the text query and the zero-shot labels live in the page address ----------
    searched = page_links.share(demo, "clip", {"clip.model": model_choice, "clip.q": query, "clip.k": k})
    on(searched.ready, lambda: gr.Tabs(selected="clip-text"), None, sections)
    on(
        searched.ready,
        text_search,
        [*model_inputs, query, k, session],
        search_outputs,
        gpu=True,
        batched=True,
    )
    on(searched.ready, show_tokens, [*model_inputs, query], tokens_view)
    book_image = (zs_image, lambda name: gr.update(value=str(clip.BOOK_IMAGES / name)))
    labelled = page_links.share(demo, "clip", {"clip.labels": labels, "clip.image": book_image})
    on(labelled.ready, zero_shot, zs_inputs, [chart, zs_table, facts, *zs_panel.outputs], gpu=True)
    on(
        search.click,
        None,
        [model_choice, query, k],
        js=page_links.sync_js("clip", ["clip.model", "clip.q", "clip.k"]),
    )
    on(
        query.submit,
        None,
        [model_choice, query, k],
        js=page_links.sync_js("clip", ["clip.model", "clip.q", "clip.k"]),
    )
    on(
        classify.click,
        None,
        [model_choice, labels],
        js=page_links.sync_js("clip", ["clip.model", "clip.labels"]),
    )

    # -- public API ----------------------------------------------------------------------------------
    def clip_search(query: str, k: int = 8, model: str = clip.DEFAULT_MODEL) -> list[dict[str, Any]]:
        """Search the default gallery (the book's images and scikit-image's photos) by text.

        Returns the `k` best images, best first: rank, id (the file name) and cosine similarity.
        """
        k, query = (
            validate.bound("clip_k", k),
            clip.check_query(validate.text(query, "query", required=False)),
        )
        model, index = ready(validate.model_id(model), None, None)
        found = index.search_vector(query_vector(query, model), k)
        return [{"rank": rank, "id": i, "cosine": s} for rank, (i, s) in enumerate(found, start=1)]

    def clip_zero_shot(
        image: gr.FileData, labels: list[str], template: str = clip.TEMPLATE, model: str = clip.DEFAULT_MODEL
    ) -> dict[str, float]:
        """Zero-shot classification of `image` against `labels`: {label: probability}, summing to 1.

        Each label fills the `{}` of `template`; probabilities are the softmax of the model's logit scale
        times the cosine similarity of image and prompt.
        """
        path = _file_path(image, "the image")
        labels = validate.texts(labels, "labels", max_items=clip.MAX_LABELS)
        template = validate.text(template, "template")
        return clip.zero_shot(path, labels, model_of(validate.model_id(model), None), template)

    def clip_matrix(
        captions: list[str] | None = None,
        images: list[gr.FileData] | None = None,
        model: str = clip.DEFAULT_MODEL,
    ) -> dict[str, Any]:
        """The book's similarity matrix: cosine of every image (rows) with every caption (columns).

        Defaults: the book's puppy, cat and car images and their captions.
        """
        captions = validate.texts(captions, "captions", max_items=clip.MAX_LABELS)
        if images is not None and not isinstance(images, list):
            raise gr.Error("Send the images as a list of files: [gradio_client.handle_file('a.jpg'), …].")
        if images and len(images) > MAX_MATRIX_IMAGES:
            raise gr.Error(f"{len(images)} images sent; the matrix takes at most {MAX_MATRIX_IMAGES}.")
        if images:
            sources = [(f"image {n}", _file_path(image, "each image")) for n, image in enumerate(images, 1)]
        else:
            sources = [(name, str(clip.BOOK_IMAGES / name)) for name in clip.BOOK_CAPTIONS]
        texts = list(captions or clip.BOOK_CAPTIONS.values())
        values = clip.similarity_matrix(sources, texts, model_of(validate.model_id(model), None))
        return {"images": [name for name, _ in sources], "captions": texts, "matrix": values.tolist()}

    api(clip_search, batched=True)
    for endpoint in (clip_zero_shot, clip_matrix):
        api(endpoint)
