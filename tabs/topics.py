"""Tab 3, chapter 5: topic modelling with BERTopic on real corpora, with its plots and datamapplot maps.

Layout and wiring only: the pipeline, the corpora and the presenters are in :mod:`lab.topics`.
"""

from __future__ import annotations

import functools
import time
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd

from lab import export, snippets, topics
from lab.config import Settings
from lab.topics import view
from tabs import access
from tabs import links as page_links
from tabs.common import LONG_JOB, Table, api, check_allowed, model_choices, on
from tabs.export import CodePanel, code_panel

INTRO = """
## Chapter 5 · Topic modelling: embed → reduce → cluster → describe
BERTopic embeds every document, reduces the embeddings with **UMAP** (5 dimensions, for clustering),
clusters them with **HDBSCAN** (documents in no dense group become outliers, topic -1), and describes each
cluster by its most distinctive words (**c-TF-IDF**). Each stage is computed once for its inputs: change
an HDBSCAN parameter and only the clustering and c-TF-IDF run again. The default corpus (10,033
Wikipedia lead sections with their 12 topics, and their MiniLM embeddings) ships with the lab, so it
fits without any download; labels let you measure how well the topics match them.
"""

CORPUS_CHOICES = [
    ("Wikipedia: 10,033 lead sections, 12 labelled topics (offline)", "wikipedia"),
    ("arXiv NLP abstracts: the book's 44,949 (needs the Hugging Face Hub)", "arxiv_nlp"),
    ("Your file: a CSV or a text file with one document per line", "upload"),
]
OUTLIER_CHOICES = [
    ("keep them (topic -1)", "keep"),
    ("c-TF-IDF: nearest topic by words", "c-tf-idf"),
    ("embeddings: nearest topic centroid", "embeddings"),
]
# Form field -> its link parameter (lab.links.SCHEME["topics"]).
LINK_NAMES = {
    "corpus": "top.corpus",
    "embedding_model": "top.model",
    "n_neighbors": "top.n_neighbors",
    "clustering": "top.clustering",
    "min_cluster_size": "top.min_cluster_size",
    "min_samples": "top.min_samples",
    "cluster_selection_method": "top.selection",
    "n_clusters": "top.n_clusters",
    "nr_topics": "top.nr_topics",
    "outliers": "top.outliers",
    "stop_words": "top.stop_words",
}
UPLOAD_COLUMNS = ("text_column", "title_column", "label_column", "date_column")  # a CSV file's columns
REPRESENTATION_CHOICES = [
    ("KeyBERTInspired", "keybert"),
    ("MMR (maximal marginal relevance)", "mmr"),
    ("Text generation (Flan-T5 or SmolLM2)", "generation"),
]


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the topic-modelling tab inside ``demo`` (call it within ``with demo:`` and a ``gr.Tab``)."""
    gr.Markdown(INTRO)
    # The session's topics.TopicSession (run, corpus, downloads folder), or None before the first fit.
    ui = SimpleNamespace(state=access.session_state(None, settings, delete_callback=_end_session))
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            ui.form = {**_corpus_form(ui, settings), **_pipeline_form()}
            with gr.Row():
                ui.fit = gr.Button("Fit topics", variant="primary", elem_id="topics-fit")
                ui.cancel = gr.Button("Cancel", elem_id="topics-cancel")
        with gr.Column(scale=3):
            _results_panel(ui)
    with gr.Tabs():
        _plot_tabs(ui)
        _datamap_tab(ui)
        _representations_tab(ui.state, settings)
        _stability_tab(ui.state)
        with gr.Tab("Downloads"):
            ui.downloads = gr.File(
                label="Topic table and document topics (CSV), interactive map (HTML)",
                file_count="multiple",
                interactive=False,
                elem_id="topics-downloads",
            )
    # A link names the corpus and every setting (upload excepted: a file is not in an address), and a topic.
    ui.arrived = page_links.share(
        demo,
        "topics",
        {LINK_NAMES[n]: w for n, w in ui.form.items() if n in LINK_NAMES},
        extra=("top.topic",),
    )
    _wire_upload(ui)
    _wire_fit(ui, settings)
    _wire_results(ui)
    _wire_maps(ui)
    endpoints = topics.TopicAPI(size=3)  # the last 3 runs, shared by every API caller
    for endpoint in (endpoints.topics_fit, endpoints.topics_search, endpoints.topics_representations):
        api(endpoint, gpu=True, time_factor=LONG_JOB)


def _end_session(session: topics.TopicSession | None) -> None:
    """When a page's session ends, its run's files go, and their private folder is forgotten."""
    topics.TopicSession.end(session)
    if session is not None:
        access.PRIVATE.delete(session.folder)


def _draw_map(
    session: topics.TopicSession | None, hide: bool, progress: gr.Progress = gr.Progress(track_tqdm=True)
) -> tuple[Any, ...]:
    """Inputs: session, hide annotations. Outputs: the documents map (its 2-d layout computed the first
    time, with a progress bar), its code and downloads."""
    if session is None:
        return None, *CodePanel.unchanged()
    run = session.run
    run.layout(progress=lambda fraction, text: progress(fraction, desc=text))
    figure = topics.documents_map(run, hide_annotations=bool(hide))
    code = snippets.topic_map(session.code, "documents", hide_annotations=bool(hide))
    table = view.topic_rows(run, session.corpus.labels)
    files = export.topic_files(run, table, {"map": figure}, stem="topics-documents-map", layout=True)
    return figure, code, files


def _linked_topic(session: topics.TopicSession | None, link: dict[str, Any] | None) -> Any:
    """Inputs: session, the link. Outputs: the topic picker, set to the link's topic if this fit has it."""
    topic = (link or {}).get("top.topic")
    if session is None or topic is None or topic not in set(session.run.info["Topic"]):
        return gr.update()
    return gr.update(value=topic)


def _session(session: topics.TopicSession | None) -> topics.TopicSession:
    if session is None:
        raise gr.Error("Fit the topics first.")
    return session


# -- layout ------------------------------------------------------------------------------------------------


def _corpus_form(ui: SimpleNamespace, settings: Settings) -> dict[str, Any]:
    """The corpus and its embedding model, named as :func:`lab.topics.load_choice` and
    :meth:`lab.topics.TopicSettings.from_form` take them (the upload box and its status go in ``ui``)."""
    form: dict[str, Any] = {
        "corpus": gr.Radio(CORPUS_CHOICES, value="wikipedia", label="Corpus", elem_id="topics-corpus")
    }
    with gr.Group(visible=False) as ui.upload_box:
        form["file"] = gr.File(
            file_types=[".csv", ".tsv", ".txt"],
            label=(
                f"CSV (one document per row) or text (one per line); at most "
                f"{topics.MAX_DOCS:,} documents and {topics.MAX_UPLOAD_BYTES / 2**20:.0f} MB"
            ),
            elem_id="topics-upload",
        )
        form["text_column"] = gr.Dropdown([], label="Text column", elem_id="topics-text-column")
        form["title_column"] = gr.Dropdown([], label="Title column (optional)", elem_id="topics-title-column")
        form["label_column"] = gr.Dropdown(
            [], label="Label column (optional, to measure agreement)", elem_id="topics-label-column"
        )
        form["date_column"] = gr.Dropdown(
            [], label="Date column (optional, a histogram in the map)", elem_id="topics-date-column"
        )
        ui.upload_status = gr.Markdown(elem_id="topics-upload-status")
    form["embedding_model"] = gr.Dropdown(
        model_choices(topics.EMBEDDING_MODELS),
        value=None,
        label="Embedding model",
        info="Empty: the corpus's own (shipped MiniLM for Wikipedia, the book's gte-small for arXiv)",
        allow_custom_value=not settings.classroom,
        elem_id="topics-embedding-model",
    )
    return form


def _pipeline_form() -> dict[str, Any]:
    """UMAP, clustering and topic settings; names as :meth:`lab.topics.TopicSettings.from_form` takes them."""
    form: dict[str, Any] = {}
    with gr.Accordion("UMAP (the book: 5 dimensions, min_dist 0, cosine, random_state 42)", open=True):
        form["n_neighbors"] = gr.Slider(
            2, 100, value=15, step=1, label="n_neighbors (local ↔ global)", elem_id="topics-neighbors"
        )
    with gr.Accordion("Clustering (the book: HDBSCAN, euclidean, eom)", open=True):
        form["clustering"] = gr.Radio(
            [("HDBSCAN", "hdbscan"), ("k-means (no outliers)", "kmeans")],
            value="hdbscan",
            label="Algorithm",
            elem_id="topics-clustering",
        )
        form["min_cluster_size"] = gr.Slider(
            2, 500, value=50, step=1, label="min_cluster_size", elem_id="topics-min-cluster-size"
        )
        form["min_samples"] = gr.Slider(
            0, 100, value=0, step=1, label="min_samples (0: same as min_cluster_size)",
            elem_id="topics-min-samples",
        )  # fmt: skip
        form["cluster_selection_method"] = gr.Radio(
            [("eom: the most stable clusters (the book's)", "eom"), ("leaf: the finest clusters", "leaf")],
            value="eom",
            label="cluster_selection_method",
            elem_id="topics-selection",
        )
        form["n_clusters"] = gr.Slider(2, 100, value=20, step=1, label="k-means: number of topics")
    with gr.Accordion("Topics", open=False):
        form["nr_topics"] = gr.Slider(
            0, 100, value=0, step=1, label="nr_topics: merge down to (0: keep all)", elem_id="topics-nr"
        )
        form["outliers"] = gr.Radio(
            OUTLIER_CHOICES, value="keep", label="Outliers", elem_id="topics-outliers"
        )
        form["stop_words"] = gr.Checkbox(
            True,
            label="Drop English stop words from topic words (BERTopic's advice; the book keeps them)",
            info="Only c-TF-IDF changes: the clusters, and the agreement with labels, stay the same.",
            elem_id="topics-stop-words",
        )
    return form


def _results_panel(ui: SimpleNamespace) -> None:
    """Summary, stage times, agreement, the topic table, one topic's words and documents, and search."""
    ui.summary = gr.Markdown("Press **Fit topics**.", elem_id="topics-summary")
    ui.collapse = gr.Markdown(elem_id="topics-collapse")
    ui.fix = gr.Button("Refit", visible=False, variant="primary", elem_id="topics-collapse-fix")
    with gr.Row():
        ui.timings = gr.Markdown(elem_id="topics-timings")
        ui.agreement = gr.Markdown(elem_id="topics-agreement")
    ui.table = Table(
        label="Topics (get_topic_info) · click a row for its words and documents",
        interactive=False,
        wrap=True,
        max_height=420,
        elem_id="topics-table",
    )
    with gr.Row():
        with gr.Column(scale=2):
            ui.topic = gr.Dropdown([], label="Topic", elem_id="topics-topic")
            ui.words = gr.Plot(label="Top words (get_topic)", elem_id="topics-words")
            ui.words_code = code_panel("topics-words")
        ui.detail = gr.Markdown(elem_id="topics-detail")
    with gr.Row():
        ui.query = gr.Textbox(
            "football",
            label="find_topics: topics closest to a query",
            info="The book asked for 'topic modeling' (arXiv); on Wikipedia try 'football', 'opera'.",
            elem_id="topics-query",
            scale=4,
        )
        ui.search = gr.Button("Search", elem_id="topics-search", scale=1)
    ui.found = Table(headers=["topic", "similarity", "name"], interactive=False, elem_id="topics-found")
    ui.found_code = code_panel("topics-search")
    ui.code = code_panel("topics")


def _plot_tabs(ui: SimpleNamespace) -> None:
    """BERTopic's figures: the documents map, bar chart, heatmap and hierarchy."""
    with gr.Tab("Documents map", id="topics-map-tab"):
        ui.hide_annotations = gr.Checkbox(True, label="Hide topic annotations")
        ui.documents_map = gr.Plot(elem_id="topics-map")
        ui.map_code = code_panel("topics-map")
    with gr.Tab("Bar chart"):
        ui.barchart = gr.Plot(elem_id="topics-barchart")
    with gr.Tab("Heatmap"):
        ui.heatmap = gr.Plot(elem_id="topics-heatmap")
    with gr.Tab("Hierarchy"):
        ui.hierarchy = gr.Plot(elem_id="topics-hierarchy")


def _datamap_tab(ui: SimpleNamespace) -> None:
    """datamapplot's static figure and its offline interactive map."""
    with gr.Tab("DataMapPlot", id="topics-datamap-tab"):
        gr.Markdown(
            "datamapplot's static figure (the book's: first 20 topics labelled) and its interactive map: "
            "zoom, hover for titles, search, and shift-drag a lasso to list a sample of the selected "
            "documents. Its scripts and font ship with the lab: it works offline."
        )
        with gr.Row():
            ui.static_button = gr.Button("Draw the static figure", elem_id="topics-datamap-static-run")
            ui.map_button = gr.Button(
                "Build the interactive map", variant="primary", elem_id="topics-datamap-run"
            )
        ui.map_extras = gr.Checkbox(
            False,
            label="Labels at medoids and topic outlines (their code compiles on first use: 5–15 s)",
            elem_id="topics-datamap-extras",
        )
        ui.map_status = gr.Markdown(elem_id="topics-datamap-status")
        ui.static = gr.Plot(elem_id="topics-datamap-static")
        ui.static_code = code_panel("topics-datamap")
        ui.datamap = gr.HTML(elem_id="topics-datamap")


def _representations_tab(state: gr.State, settings: Settings) -> None:
    """The book's representation comparison, laid out and wired."""
    with gr.Tab("Representation lab", id="topics-representations-tab"):
        gr.Markdown(
            "The book's comparison: each topic's c-TF-IDF words (**Original**) next to what a "
            "representation model makes of them. KeyBERTInspired re-ranks words by similarity to the "
            "topic's representative documents; MMR keeps them relevant but diverse; a text-generation "
            "model writes a label from the book's prompt ([DOCUMENTS], [KEYWORDS])."
        )
        with gr.Row():
            kinds = gr.CheckboxGroup(
                REPRESENTATION_CHOICES,
                value=["keybert", "mmr"],
                label="Representations",
                elem_id="topics-kinds",
            )
            diversity = gr.Slider(0, 1, value=0.2, step=0.05, label="MMR diversity", elem_id="topics-div")
            generator = gr.Dropdown(
                model_choices(topics.GENERATORS),
                value=None,
                label="Text-generation model",
                info="Empty: Flan-T5 small (the book's) if it can be loaded, else SmolLM2 (offline).",
                elem_id="topics-generator",
            )
            generation_topics = gr.Slider(1, 30, value=8, step=1, label="Topics to label by generation")
        prompt = gr.Textbox(topics.BOOK_PROMPT, lines=6, label="Prompt (text generation)")
        run_button = gr.Button(
            "Compare representations", variant="primary", elem_id="topics-representations-run"
        )
        table = Table(interactive=False, wrap=True, elem_id="topics-representations")
        panel = code_panel("topics-representations")

    def compare(
        values: dict[Any, Any], progress: gr.Progress = gr.Progress(track_tqdm=True)
    ) -> tuple[pd.DataFrame, str, list[str]]:
        """Inputs: session, kinds, MMR diversity, generator, topics to label, prompt (read by component).
        Outputs: the representation table, code, downloads."""
        session = _session(values[state])
        if values[generator]:
            check_allowed(values[generator], settings)
        asked = {
            "kinds": tuple(values[kinds] or ()),
            "diversity": float(values[diversity]),
            "generator": values[generator] or None,
            "prompt": values[prompt],
            "max_topics": 30,
            "generation_topics": int(values[generation_topics]),
        }
        say = lambda fraction, text: progress(fraction, desc=text)  # noqa: E731
        result = topics.compare_representations(session.run, **asked, progress=say)
        code = snippets.topic_representations(session.code, **asked)
        return result, code, export.representations_files(result, asked)

    inputs = {state, kinds, diversity, generator, generation_topics, prompt}
    on(run_button.click, compare, inputs, [table, *panel.outputs], gpu=True, time_factor=LONG_JOB)


# -- wiring ------------------------------------------------------------------------------------------------


def _stability_tab(state: gr.State) -> None:
    """Why topics move: a min_cluster_size sweep, three UMAP seeds, the outlier strategies."""
    with gr.Tab("Stability", id="topics-stability-tab"):
        gr.Markdown(
            "Topics change between runs and many documents end up as outliers: this is why. The sweep "
            "re-runs only HDBSCAN on this fit's cached UMAP map, so each point takes about a second; the "
            "seeds re-run UMAP (a minute each on 10,000 documents on a CPU); the strategies are BERTopic's "
            "`reduce_outliers`, tried on this fit's outliers."
        )
        with gr.Row():
            sweep_run = gr.Button("Sweep min_cluster_size", variant="primary", elem_id="topics-sweep-run")
            seeds_run = gr.Button("Three UMAP seeds", elem_id="topics-seeds-run")
            outliers_run = gr.Button("Outlier strategies", elem_id="topics-outliers-run")
        sweep_text = gr.Markdown(elem_id="topics-sweep-text")
        sweep_plot = gr.Plot(label="Topics, outliers and NMI by min_cluster_size", elem_id="topics-sweep")
        seeds_text = gr.Markdown(elem_id="topics-seeds-text")
        seeds = Table(interactive=False, elem_id="topics-seeds")
        outliers = Table(interactive=False, elem_id="topics-outliers")
        panel = code_panel("topics-stability")

    def sweep(session: topics.TopicSession | None, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Inputs: session. Outputs: the sweep in words, its figure."""
        chosen = _session(session)
        run = chosen.run
        points = topics.sweep_min_cluster_size(
            run, chosen.corpus.labels, progress=lambda f, t: progress(f, desc=t)
        )
        words = view.sweep_markdown(points, run.params["hdbscan"]["min_cluster_size"])
        figure = topics.stability_sweep(points)
        files = export.stability_files("sweep", figure=figure, data=points)
        return words, figure, snippets.topic_stability(chosen.code, "sweep"), files

    def by_seed(session: topics.TopicSession | None, progress: gr.Progress = gr.Progress()) -> tuple:
        """Inputs: session. Outputs: the seeds in words, their table."""
        chosen = _session(session)
        agreement = topics.seed_agreement(chosen.run, progress=lambda f, t: progress(f, desc=t))
        table = view.seeds_table(agreement)
        files = export.stability_files("seeds", table=table, data=agreement)
        return view.seeds_markdown(agreement), table, snippets.topic_stability(chosen.code, "seeds"), files

    def strategies(session: topics.TopicSession | None, progress: gr.Progress = gr.Progress()) -> Any:
        """Inputs: session. Outputs: the outlier strategies' table."""
        chosen = _session(session)
        rows = topics.compare_outlier_strategies(
            chosen.run, chosen.corpus.labels, progress=lambda f, t: progress(f, desc=t)
        )
        table = view.outliers_table(rows)
        files = export.stability_files("outliers", table=table, data=rows)
        return table, snippets.topic_stability(chosen.code, "outliers"), files

    long_job = {"gpu": True, "time_factor": LONG_JOB}
    on(sweep_run.click, sweep, state, [sweep_text, sweep_plot, *panel.outputs], **long_job)
    on(seeds_run.click, by_seed, state, [seeds_text, seeds, *panel.outputs], **long_job)
    on(outliers_run.click, strategies, state, [outliers, *panel.outputs], **long_job)


def _wire_upload(ui: SimpleNamespace) -> None:
    form = ui.form
    columns = [form["text_column"], form["title_column"], form["label_column"], form["date_column"]]

    def choose_corpus(choice: str) -> Any:
        """Inputs: corpus choice. Outputs: the upload box, shown for "upload"."""
        return gr.update(visible=choice == "upload")

    def read_upload(file: str | None) -> tuple[Any, ...]:
        """Inputs: the uploaded file. Outputs: text, title, label and date column pickers; upload status."""
        hidden = gr.update(choices=[], value=None, visible=False)
        if not file:
            return hidden, hidden, hidden, hidden, ""
        if not topics.is_csv(file):
            return hidden, hidden, hidden, hidden, view.upload_status(corpus=topics.read_text_file(file))
        names = topics.csv_columns(file)
        guess = topics.guess_columns(names)
        optional = [topics.NO_COLUMN, *names]
        return (
            gr.update(choices=names, value=guess["text"], visible=True),
            *(
                gr.update(choices=optional, value=guess[role] or topics.NO_COLUMN, visible=True)
                for role in ("title", "label", "date")
            ),
            view.upload_status(columns=names),
        )

    on(form["corpus"].change, choose_corpus, form["corpus"], ui.upload_box)
    on(form["file"].change, read_upload, form["file"], [*columns, ui.upload_status])


def _wire_fit(ui: SimpleNamespace, settings: Settings) -> None:
    def fit(
        values: dict[Any, Any], request: gr.Request, progress: gr.Progress = gr.Progress()
    ) -> tuple[Any, ...]:
        """Inputs: session and the corpus and pipeline form (read by name). Outputs: session, summary,
        collapse note and its fix button, timings, agreement, topic table, topic picker, downloads, the
        (cleared) interactive map and its status, and the code."""
        form = {name: values[component] for name, component in ui.form.items()}
        progress(0.0, desc="Loading the corpus")
        corpus = topics.corpus_from_form(form)
        choice = topics.TopicSettings.from_form(form)
        check_allowed(choice.embedding_model or corpus.embedding_model, settings)
        say = lambda fraction, text: progress(fraction, desc=text)  # noqa: E731
        run = topics.fit_corpus(corpus, choice, progress=say)
        previous = values[ui.state]
        collapse, fix = topics.diagnose(run, previous.run if previous else None, progress=say)
        # The run's files go in a private folder: served to this student's login only.
        mine = functools.partial(access.private_folder, request)
        session = topics.TopicSession.start(run, corpus, previous, fix=fix, new_folder=mine)
        session.code = snippets.topics(
            form["corpus"],
            choice,
            file=form.get("file") if form["corpus"] == "upload" else None,
            columns={name: form.get(name) for name in UPLOAD_COLUMNS},
            embedding_model=run.params["embedding_model"],
            fitted=run.params,
            shipped_embeddings=topics.shipped_embeddings(corpus, choice) is not None,
        )
        return (
            session,
            view.summary_markdown(run, corpus),
            view.collapse_markdown(collapse, fix),
            gr.update(visible=fix is not None, value=fix.label() if fix else "Refit"),
            view.timings_markdown(run),
            view.agreement_markdown(topics.agreement(run.topics, corpus.labels)),
            view.topic_rows(run, corpus.labels),
            gr.update(choices=view.topic_choices(run), value=view.first_topic(run)),
            session.downloads(),
            "",  # an old interactive map no longer matches
            "",
            session.code,
        )

    def apply_fix(session: topics.TopicSession | None) -> tuple[Any, Any]:
        """Inputs: session. Outputs: min_cluster_size and cluster_selection_method, set to the fix."""
        fix = _session(session).fix
        if fix is None:
            return gr.update(), gr.update()
        return (
            gr.update(value=fix.hdbscan_params["min_cluster_size"]),
            gr.update(value=fix.hdbscan_params["cluster_selection_method"]),
        )

    def draw_figures(session: topics.TopicSession | None) -> tuple[Any, ...]:
        """Inputs: session. Outputs: bar chart, heatmap, hierarchy, the fit's downloads (figures, tables,
        result)."""
        if session is None:
            return None, None, None, None
        figures = {
            name: view.figure_or_message(draw, session.run)
            for name, draw in (
                ("barchart", topics.barchart),
                ("heatmap", topics.heatmap),
                ("hierarchy", topics.hierarchy),
            )
        }
        table = view.topic_rows(session.run, session.corpus.labels)
        return (*figures.values(), export.topic_files(session.run, table, figures))

    outputs = [ui.state, ui.summary, ui.collapse, ui.fix, ui.timings, ui.agreement, ui.table, ui.topic]
    inputs = {ui.state, *ui.form.values()}
    fit_outputs = [*outputs, ui.downloads, ui.datamap, ui.map_status, ui.code.code]
    fitted = on(ui.fit.click, fit, inputs, fit_outputs, gpu=True, time_factor=LONG_JOB)
    form = [ui.form["min_cluster_size"], ui.form["cluster_selection_method"]]
    fixed = on(ui.fix.click, apply_fix, ui.state, form)
    refitted = on(fixed.success, fit, inputs, fit_outputs, gpu=True, time_factor=LONG_JOB)
    linked = on(ui.arrived.ready, fit, inputs, fit_outputs, gpu=True, time_factor=LONG_JOB)
    on(linked.success, _linked_topic, [ui.state, ui.arrived.state], ui.topic)
    names = list(LINK_NAMES.values())
    sync = page_links.sync_js("topics", names)
    on(ui.fit.click, None, [ui.form[n] for n in LINK_NAMES], js=sync)
    on(ui.topic.change, None, ui.topic, js=page_links.sync_js("topics", ["top.topic"]))
    for done in (fitted, refitted, linked):
        # The figures follow the table; the documents map lays the documents out in 2-d the first time.
        on(done.then, draw_figures, ui.state, [ui.barchart, ui.heatmap, ui.hierarchy, ui.code.files])
        on(done.then, _draw_map, [ui.state, ui.hide_annotations], [ui.documents_map, *ui.map_code.outputs])
    on(ui.cancel.click, None, cancels=[fitted, refitted, linked])


def _wire_results(ui: SimpleNamespace) -> None:
    def show_topic(session: topics.TopicSession | None, topic: int | None) -> tuple[Any, ...]:
        """Inputs: session, topic. Outputs: the topic's word bars, its representative documents, code,
        downloads."""
        if session is None or topic is None:
            return None, "", *CodePanel.unchanged()
        run, topic = session.run, int(topic)
        words, name = topics.topic_words(run, topic), run.topic_name(topic)
        bars = topics.word_bars(words, name)
        return (
            bars,
            view.detail_markdown(run, topic),
            snippets.topic_words(session.code, topic),
            export.topic_words_files(topic, name, words, bars),
        )

    def pick_row(session: topics.TopicSession | None, event: gr.SelectData) -> Any:
        """Inputs: session, the clicked table row. Outputs: the topic picker, set to that row's topic."""
        if session is None:
            return gr.update()
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return gr.update(value=int(session.run.info["Topic"].iloc[int(row)]))

    def search(session: topics.TopicSession | None, text: str) -> tuple[pd.DataFrame, str, list[str]]:
        """Inputs: session, query. Outputs: the closest topics, code, downloads."""
        session, query = _session(session), (text or "").strip()
        found = topics.search(session.run, query, 5)
        code = snippets.topic_search(session.code, query, 5)
        return view.search_table(found), code, export.topic_search_files(query, found)

    on(ui.topic.change, show_topic, [ui.state, ui.topic], [ui.words, ui.detail, *ui.words_code.outputs])
    on(ui.table.select, pick_row, ui.state, ui.topic)
    for trigger in (ui.search.click, ui.query.submit):
        on(trigger, search, [ui.state, ui.query], [ui.found, *ui.found_code.outputs], gpu=True)
    map_outputs = [ui.documents_map, *ui.map_code.outputs]
    on(ui.hide_annotations.change, _draw_map, [ui.state, ui.hide_annotations], map_outputs)


def _wire_maps(ui: SimpleNamespace) -> None:
    def draw_static(
        session: topics.TopicSession | None, progress: gr.Progress = gr.Progress()
    ) -> tuple[Any, str, list[str]]:
        """Inputs: session. Outputs: datamapplot's static figure, its code and downloads."""
        import matplotlib.pyplot as plt

        session = _session(session)
        run = session.run
        run.layout(progress=lambda fraction, text: progress(fraction, desc=text))
        progress(0.5, desc="datamapplot: placing labels")
        figure = topics.datamap_static(run)
        plt.close(figure)  # Gradio renders it after this returns; pyplot need not keep it
        progress(0.8, desc="Writing the downloads (PNG, SVG)")
        table = view.topic_rows(run, session.corpus.labels)
        files = export.topic_files(run, table, {"datamap": figure}, stem="topics-datamap", layout=True)
        return figure, snippets.topic_map(session.code, "datamap"), files

    def build_map(
        session: topics.TopicSession | None, extras: bool, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, str, list[str]]:
        """Inputs: session, medoids and outlines. Outputs: the interactive map, its status, downloads."""
        session = _session(session)
        session.run.layout(progress=lambda fraction, text: progress(fraction, desc=text))
        progress(0.5, desc="datamapplot: building the interactive map")
        started = time.perf_counter()
        page, path = session.interactive_map(extras=bool(extras))
        status = view.map_status(page, path, time.perf_counter() - started)
        return view.map_frame(page), status, session.downloads()

    on(ui.static_button.click, draw_static, ui.state, [ui.static, *ui.static_code.outputs])
    on(ui.map_button.click, build_map, [ui.state, ui.map_extras], [ui.datamap, ui.map_status, ui.downloads])
