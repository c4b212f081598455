"""Tab 3, chapter 5: topic modelling with BERTopic on real corpora, with its plots and datamapplot maps."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from lab import topic_plots, topics
from lab.config import Settings
from tabs.common import CPU_EVENT, GPU_EVENT, check_allowed, model_choices, user_errors

INTRO = """
### Chapter 5 · Topic modelling: embed → reduce → cluster → describe
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
REPRESENTATION_CHOICES = [
    ("KeyBERTInspired", "keybert"),
    ("MMR (maximal marginal relevance)", "mmr"),
    ("Text generation (Flan-T5 or SmolLM2)", "generation"),
]
STAGES = {
    "import": "Loading BERTopic, UMAP, HDBSCAN (first fit only)",
    "embeddings": "Embeddings",
    "umap": "UMAP → 5-d (clustering)",
    "umap_2d": "UMAP → 2-d (maps)",
    "clustering": "Clustering",
    "ctfidf": "c-TF-IDF (BERTopic)",
    "outliers": "Outlier reduction",
}
TEXT_NAMES = ("text", "abstract", "abstracts", "document", "body", "content", "summary", "extract")
TITLE_NAMES = ("title", "titles", "name", "headline")
LABEL_NAMES = ("label", "labels", "topic", "category", "class")
DATE_NAMES = ("date", "year", "time", "published", "created")
NONE = "(none)"


# -- present ---------------------------------------------------------------------------------------------


def timings_markdown(run: topics.TopicRun) -> str:
    """Seconds per stage, and whether each came from a cache, as a small table."""
    lines = ["| stage | seconds | |", "| --- | ---: | --- |"]
    for key, name in STAGES.items():
        if key in run.timings:
            how = "cached" if run.cached.get(key) else "ran"
            lines.append(f"| {name} | {run.timings[key]:.2f} | {how} |")
    lines.append(f"| **total** | **{run.timings['total']:.2f}** | |")
    return "\n".join(lines)


def summary_markdown(run: topics.TopicRun, corpus: topics.Corpus) -> str:
    lines = [
        f"**{run.n_topics} topics** in {len(run.topics):,} documents; "
        f"**{run.outlier_share:.0%} outliers** (topic -1). Embeddings: `{run.params['embedding_model']}`; "
        f"UMAP n_neighbors={run.params['umap']['n_neighbors']}, "
        + (
            f"HDBSCAN min_cluster_size={run.params['hdbscan']['min_cluster_size']}, "
            f"min_samples={run.params['hdbscan']['min_samples'] or 'same'}."
            if run.params["clustering"] == "hdbscan"
            else f"k-means with {run.params['n_clusters']} clusters."
        )
    ]
    if corpus.source:
        lines.append(f"<small>Corpus: {corpus.source}</small>")
    lines += [f"- {note}" for note in [*corpus.notes, *run.notes]]
    return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if lines[2:] else "")


def agreement_markdown(result: dict[str, Any] | None) -> str:
    if result is None:
        return "*No labels for this corpus: nothing to compare the topics with.*"
    non = result["nmi_non_outliers"]
    ari_non = result["ari_non_outliers"]
    return (
        f"**Agreement with the {result['labels']} labels** (1 = the same grouping, 0 = unrelated). "
        f"NMI: **{non:.2f}** over the {1 - result['outlier_share']:.0%} of documents with a topic, "
        f"**{result['nmi_all']:.2f}** over all (outliers counted as one more topic). "
        f"ARI: {ari_non:.2f} / {result['ari_all']:.2f}. "
        "Smaller min_cluster_size → more, finer topics; larger n_neighbors → broader ones; outlier "
        "reduction trades purity for coverage."
        if non is not None
        else f"NMI over all documents: {result['nmi_all']:.2f}; every document is an outlier."
    )


def topic_rows(run: topics.TopicRun, labels: list[str] | None) -> pd.DataFrame:
    """The topic table, with each topic's most common label when the corpus has labels."""
    table = topics.topic_table(run)
    if labels is not None:
        frame = pd.DataFrame({"topic": run.topics, "label": labels})
        top = {}
        for topic, group in frame.groupby("topic"):
            counts = group["label"].value_counts()
            top[topic] = f"{counts.index[0]} ({counts.iloc[0] / len(group):.0%})"
        table.insert(3, "Main label", [top.get(t, "") for t in table["Topic"]])
    return table


def detail_markdown(run: topics.TopicRun, topic: int) -> str:
    docs = topics.representative_docs(run, topic)
    count = int(run.info.loc[run.info.Topic == topic, "Count"].iloc[0])
    lines = [f"**Topic {topic}** · {count:,} documents · representative documents (c-TF-IDF):"]
    for title, text in docs:
        head = f"**{title}**: " if title else ""
        lines.append(f"- {head}{topics.short_label(text, 320)}")
    return "\n".join(lines)


def _topic_choices(run: topics.TopicRun) -> list[tuple[str, int]]:
    labels = topic_plots.topic_labels(run)
    return [(labels[t] if t != -1 else "-1: outliers", int(t)) for t in run.info["Topic"]]


def _session_folder(session: dict | None) -> Path:
    """Where a session's downloads are written (one folder per session, removed with the session)."""
    if session and session.get("folder") is not None and session["folder"].is_dir():
        return session["folder"]
    folder = Path(tempfile.gettempdir()) / "llm-lab-topics" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _delete_session(session: dict | None) -> None:
    if session and session.get("folder") is not None:
        shutil.rmtree(session["folder"], ignore_errors=True)


# -- corpus choice ---------------------------------------------------------------------------------------


def _guess(columns: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[n] for n in names if n in lowered), None)


def _is_csv(path: str) -> bool:
    return Path(path).suffix.lower() in {".csv", ".tsv"}


def load_choice(
    choice: str,
    file: str | None,
    text_column: str | None,
    title_column: str | None,
    label_column: str | None,
    date_column: str | None,
) -> topics.Corpus:
    """The corpus the page asks for: a named one, or the uploaded file read with the chosen columns."""
    if choice in topics.CORPUS_NAMES:
        return topics.load_corpus(choice)
    if not file:
        raise gr.Error("Upload a CSV or text file first, or choose the Wikipedia corpus.")

    def column(value: str | None) -> str | None:
        return None if not value or value == NONE else value

    if _is_csv(file):
        if not column(text_column):
            raise gr.Error("Choose the column that holds the text of each document.")
        return topics.read_csv(
            file,
            column(text_column),
            title_column=column(title_column),
            label_column=column(label_column),
            date_column=column(date_column),
        )
    return topics.read_text_file(file)


# -- API runs: shared by every gradio_client caller, a few kept ------------------------------------------

_api_runs: OrderedDict[tuple, tuple[topics.TopicRun, topics.Corpus]] = OrderedDict()
_api_lock = threading.Lock()


def api_run(
    corpus: str,
    n_neighbors: int,
    min_cluster_size: int,
    min_samples: int | None,
    nr_topics: int | None,
    stop_words: bool = True,
) -> tuple[topics.TopicRun, topics.Corpus]:
    """A fitted run for API callers, reused while its parameters are the same (the last 3 kept)."""
    min_samples, nr_topics = _optional_int(min_samples), _optional_int(nr_topics)
    key = (corpus, int(n_neighbors), int(min_cluster_size), min_samples, nr_topics, bool(stop_words))
    with _api_lock:
        if key in _api_runs:
            _api_runs.move_to_end(key)
            return _api_runs[key]
    data = topics.load_corpus(corpus)
    run = topics.fit(
        data.docs,
        titles=data.titles,
        embeddings=data.embeddings,
        embedding_model=data.embedding_model,
        umap_params={"n_neighbors": int(n_neighbors)},
        hdbscan_params={"min_cluster_size": int(min_cluster_size), "min_samples": min_samples},
        nr_topics=nr_topics,
        stop_words=bool(stop_words),
    )
    with _api_lock:
        _api_runs[key] = (run, data)
        while len(_api_runs) > 3:
            _api_runs.popitem(last=False)
    return run, data


def _optional_int(value: Any) -> int | None:
    if value is None or value == "" or int(value) <= 0:
        return None
    return int(value)


# -- the tab ---------------------------------------------------------------------------------------------


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the topic-modelling tab inside ``demo`` (call it within ``with demo:`` and a ``gr.Tab``)."""
    del demo  # no page-load events here
    import matplotlib

    matplotlib.use("Agg")  # datamapplot draws with pyplot; the server has no display and runs in threads
    gr.Markdown(INTRO)
    # {"run", "corpus", "folder"} of this session
    state = gr.State(None, time_to_live=4 * 3600, delete_callback=_delete_session)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            corpus_choice = gr.Radio(
                CORPUS_CHOICES, value="wikipedia", label="Corpus", elem_id="topics-corpus"
            )
            with gr.Group(visible=False) as upload_box:
                upload = gr.File(
                    file_types=[".csv", ".tsv", ".txt"],
                    label=(
                        f"CSV (one document per row) or text (one per line); at most "
                        f"{topics.MAX_DOCS:,} documents and {topics.MAX_UPLOAD_BYTES / 2**20:.0f} MB"
                    ),
                    elem_id="topics-upload",
                )
                text_column = gr.Dropdown([], label="Text column", elem_id="topics-text-column")
                title_column = gr.Dropdown([], label="Title column (optional)", elem_id="topics-title-column")
                label_column = gr.Dropdown(
                    [], label="Label column (optional, to measure agreement)", elem_id="topics-label-column"
                )
                date_column = gr.Dropdown(
                    [], label="Date column (optional, a histogram in the map)", elem_id="topics-date-column"
                )
                upload_status = gr.Markdown(elem_id="topics-upload-status")
            embedding_model = gr.Dropdown(
                model_choices(topics.EMBEDDING_MODELS),
                value=None,
                label="Embedding model",
                info="Empty: the corpus's own (shipped MiniLM for Wikipedia, the book's gte-small for arXiv)",
                allow_custom_value=not settings.classroom,
                elem_id="topics-embedding-model",
            )
            with gr.Accordion(
                "UMAP (the book: 5 dimensions, min_dist 0, cosine, random_state 42)", open=True
            ):
                n_neighbors = gr.Slider(
                    2, 100, value=15, step=1, label="n_neighbors (local ↔ global)", elem_id="topics-neighbors"
                )
            with gr.Accordion("Clustering (the book: HDBSCAN, euclidean, eom)", open=True):
                clustering = gr.Radio(
                    [("HDBSCAN", "hdbscan"), ("k-means (no outliers)", "kmeans")],
                    value="hdbscan",
                    label="Algorithm",
                    elem_id="topics-clustering",
                )
                min_cluster_size = gr.Slider(
                    2, 500, value=50, step=1, label="min_cluster_size", elem_id="topics-min-cluster-size"
                )
                min_samples = gr.Slider(
                    0,
                    100,
                    value=0,
                    step=1,
                    label="min_samples (0: same as min_cluster_size)",
                    elem_id="topics-min-samples",
                )
                n_clusters = gr.Slider(2, 100, value=20, step=1, label="k-means: number of topics")
            with gr.Accordion("Topics", open=False):
                nr_topics = gr.Slider(
                    0,
                    100,
                    value=0,
                    step=1,
                    label="nr_topics: merge down to (0: keep all)",
                    elem_id="topics-nr",
                )
                outliers = gr.Radio(
                    OUTLIER_CHOICES, value="keep", label="Outliers", elem_id="topics-outliers"
                )
                stop_words = gr.Checkbox(
                    True,
                    label="Drop English stop words from topic words (BERTopic's advice; the book keeps them)",
                    info="Only c-TF-IDF changes: the clusters, and the agreement with labels, stay the same.",
                    elem_id="topics-stop-words",
                )
            with gr.Row():
                fit_button = gr.Button("Fit topics", variant="primary", elem_id="topics-fit")
                cancel = gr.Button("Cancel", elem_id="topics-cancel")
        with gr.Column(scale=3):
            summary = gr.Markdown("Press **Fit topics**.", elem_id="topics-summary")
            with gr.Row():
                timings = gr.Markdown(elem_id="topics-timings")
                agreement = gr.Markdown(elem_id="topics-agreement")
            table = gr.Dataframe(
                label="Topics (get_topic_info) · click a row for its words and documents",
                interactive=False,
                wrap=True,
                max_height=420,
                elem_id="topics-table",
            )
            with gr.Row():
                with gr.Column(scale=2):
                    topic_choice = gr.Dropdown([], label="Topic", elem_id="topics-topic")
                    words = gr.Plot(label="Top words (get_topic)", elem_id="topics-words")
                detail = gr.Markdown(elem_id="topics-detail")
            with gr.Row():
                query = gr.Textbox(
                    "football",
                    label="find_topics: topics closest to a query",
                    info="The book asked for 'topic modeling' (arXiv); on Wikipedia try 'football', 'opera'.",
                    elem_id="topics-query",
                    scale=4,
                )
                search_button = gr.Button("Search", elem_id="topics-search", scale=1)
            found = gr.Dataframe(
                headers=["topic", "similarity", "name"], interactive=False, elem_id="topics-found"
            )
    with gr.Tabs():
        with gr.Tab("Documents map", id="topics-map-tab"):
            hide_annotations = gr.Checkbox(True, label="Hide topic annotations")
            documents_map = gr.Plot(elem_id="topics-map")
        with gr.Tab("Bar chart"):
            barchart = gr.Plot(elem_id="topics-barchart")
        with gr.Tab("Heatmap"):
            heatmap = gr.Plot(elem_id="topics-heatmap")
        with gr.Tab("Hierarchy"):
            hierarchy = gr.Plot(elem_id="topics-hierarchy")
        with gr.Tab("DataMapPlot", id="topics-datamap-tab"):
            gr.Markdown(
                "datamapplot's static figure (the book's: first 20 topics labelled) and its interactive map: "
                "zoom, hover for titles, search, and shift-drag a lasso to list a sample of the selected "
                "documents. Its scripts and font ship with the lab: it works offline."
            )
            with gr.Row():
                static_button = gr.Button("Draw the static figure", elem_id="topics-datamap-static-run")
                map_button = gr.Button(
                    "Build the interactive map", variant="primary", elem_id="topics-datamap-run"
                )
            map_extras = gr.Checkbox(
                False,
                label="Labels at medoids and topic outlines (their code compiles on first use: 5–15 s)",
                elem_id="topics-datamap-extras",
            )
            map_status = gr.Markdown(elem_id="topics-datamap-status")
            datamap_static = gr.Plot(elem_id="topics-datamap-static")
            datamap = gr.HTML(elem_id="topics-datamap")
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
            representations_button = gr.Button(
                "Compare representations", variant="primary", elem_id="topics-representations-run"
            )
            representations = gr.Dataframe(interactive=False, wrap=True, elem_id="topics-representations")
        with gr.Tab("Downloads"):
            downloads = gr.File(
                label="Topic table and document topics (CSV), interactive map (HTML)",
                file_count="multiple",
                interactive=False,
                elem_id="topics-downloads",
            )

    # -- handlers ----------------------------------------------------------------------------------------

    def choose_corpus(choice: str) -> Any:
        return gr.update(visible=choice == "upload")

    @user_errors
    def read_upload(file: str | None) -> tuple[Any, Any, Any, Any, str]:
        hidden = gr.update(choices=[], value=None, visible=False)
        if not file:
            return hidden, hidden, hidden, hidden, ""
        if not _is_csv(file):
            corpus = topics.read_text_file(file)
            notes = " ".join(corpus.notes)
            return hidden, hidden, hidden, hidden, f"{len(corpus):,} documents (one per line). {notes}"
        columns = topics.csv_columns(file)
        optional = [NONE, *columns]
        text = _guess(columns, TEXT_NAMES) or (columns[0] if columns else None)
        return (
            gr.update(choices=columns, value=text, visible=True),
            gr.update(choices=optional, value=_guess(columns, TITLE_NAMES) or NONE, visible=True),
            gr.update(choices=optional, value=_guess(columns, LABEL_NAMES) or NONE, visible=True),
            gr.update(choices=optional, value=_guess(columns, DATE_NAMES) or NONE, visible=True),
            f"Columns: {', '.join(columns)}. Choose which holds the text.",
        )

    @user_errors
    def fit(
        session: dict | None,
        choice: str,
        file: str | None,
        text_col: str | None,
        title_col: str | None,
        label_col: str | None,
        date_col: str | None,
        model_id: str | None,
        neighbours: float,
        algorithm: str,
        cluster_size: float,
        samples: float,
        clusters: float,
        merge: float,
        outlier_choice: str,
        drop_stop_words: bool,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Any, ...]:
        progress(0.0, desc="Loading the corpus")
        corpus = load_choice(choice, file, text_col, title_col, label_col, date_col)
        model_id = model_id or corpus.embedding_model
        check_allowed(model_id, settings)
        precomputed = corpus.embeddings if model_id == corpus.embedding_model else None
        run = topics.fit(
            corpus.docs,
            titles=corpus.titles,
            embeddings=precomputed,
            embedding_model=model_id,
            umap_params={"n_neighbors": int(neighbours)},
            hdbscan_params={"min_cluster_size": int(cluster_size), "min_samples": _optional_int(samples)},
            nr_topics=_optional_int(merge),
            outliers=None if outlier_choice == "keep" else outlier_choice,
            clustering=algorithm,
            n_clusters=int(clusters),
            stop_words=bool(drop_stop_words),
            progress=lambda fraction, text: progress(fraction, desc=text),
        )
        folder = _session_folder(session)
        (folder / "topic_map.html").unlink(missing_ok=True)  # the old map shows the old topics
        files = [
            str(topics.export_topic_table(run, folder / "topics.csv")),
            str(topics.export_document_topics(run, folder / "document_topics.csv", corpus.labels)),
        ]
        session = {"run": run, "corpus": corpus, "folder": folder}
        choices = _topic_choices(run)
        first = next((value for _, value in choices if value != -1), choices[0][1])
        return (
            session,
            summary_markdown(run, corpus),
            timings_markdown(run),
            agreement_markdown(topics.agreement(run.topics, corpus.labels)),
            topic_rows(run, corpus.labels),
            gr.update(choices=choices, value=first),
            files,
            "",  # an old interactive map no longer matches
            "",
        )

    def _run_of(session: dict | None) -> topics.TopicRun:
        if not session:
            raise gr.Error("Fit the topics first.")
        return session["run"]

    @user_errors
    def show_topic(session: dict | None, topic: int | None) -> tuple[Any, str]:
        if not session or topic is None:
            return None, ""
        run = _run_of(session)
        words_figure = topic_plots.word_bars(topics.topic_words(run, int(topic)), run.topic_name(int(topic)))
        return words_figure, detail_markdown(run, int(topic))

    def pick_row(session: dict | None, event: gr.SelectData) -> Any:
        if not session:
            return gr.update()
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return gr.update(value=int(_run_of(session).info["Topic"].iloc[int(row)]))

    @user_errors
    def search(session: dict | None, text: str) -> pd.DataFrame:
        hits = topics.search(_run_of(session), text, 5)
        return pd.DataFrame(
            [(t, round(s, 3), name) for t, s, name in hits], columns=["topic", "similarity", "name"]
        )

    @user_errors
    def draw_map(session: dict | None, hide: bool) -> Any:
        if not session:
            return None
        return topic_plots.documents_map(_run_of(session), hide_annotations=bool(hide))

    def _figure_or_message(draw: Any, run: topics.TopicRun) -> Any:
        try:
            return draw(run)
        except ValueError as error:  # too few topics for this plot: say so in its place
            import plotly.graph_objects as go

            return go.Figure().update_layout(title=str(error), height=120)

    @user_errors
    def draw_plots(session: dict | None, hide: bool) -> tuple[Any, ...]:
        if not session:
            return None, None, None, None
        run = _run_of(session)
        return (
            topic_plots.documents_map(run, hide_annotations=bool(hide)),
            _figure_or_message(topic_plots.barchart, run),
            _figure_or_message(topic_plots.heatmap, run),
            _figure_or_message(topic_plots.hierarchy, run),
        )

    @user_errors
    def draw_static(session: dict | None, progress: gr.Progress = gr.Progress()) -> Any:
        import matplotlib.pyplot as plt

        progress(0.1, desc="datamapplot: placing labels")
        figure = topic_plots.datamap_static(_run_of(session))
        plt.close(figure)  # Gradio renders it after this returns; pyplot need not keep it
        return figure

    @user_errors
    def build_map(
        session: dict | None, extras: bool, progress: gr.Progress = gr.Progress()
    ) -> tuple[str, str, list[str]]:
        run = _run_of(session)
        corpus: topics.Corpus = session["corpus"]
        progress(0.1, desc="datamapplot: building the interactive map")
        started = time.perf_counter()
        page = topic_plots.interactive_map(
            run, title=f"Topics of {corpus.name}", dates=corpus.dates, medoids=extras, boundaries=extras
        )
        seconds = time.perf_counter() - started
        path = topic_plots.save_interactive_map(page, session["folder"] / "topic_map.html")
        files = sorted(str(p) for p in session["folder"].iterdir())
        status = (
            f"Built in {seconds:.1f} s ({len(page) / 1e6:.1f} MB, self-contained: download "
            f"`{path.name}` under Downloads to open it in any browser, offline)."
        )
        return topic_plots_iframe(page), status, files

    @user_errors
    def compare(
        session: dict | None,
        chosen: list[str],
        mmr_diversity: float,
        generator_id: str | None,
        how_many: float,
        template: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),
    ) -> pd.DataFrame:
        run = _run_of(session)
        if not chosen:
            raise gr.Error("Tick at least one representation.")
        if generator_id:
            check_allowed(generator_id, settings)
        return topics.compare_representations(
            run,
            run.docs,
            kinds=tuple(chosen),
            diversity=float(mmr_diversity),
            generator=generator_id or None,
            prompt=template,
            max_topics=30,
            generation_topics=int(how_many),
            progress=lambda fraction, text: progress(fraction, desc=text),
        )

    # -- wiring --------------------------------------------------------------------------------------------
    private = {"api_visibility": "private"}
    corpus_choice.change(choose_corpus, corpus_choice, upload_box, **private, **CPU_EVENT)
    upload.change(
        read_upload,
        upload,
        [text_column, title_column, label_column, date_column, upload_status],
        **private,
        **CPU_EVENT,
    )
    fit_inputs = [
        state,
        corpus_choice,
        upload,
        text_column,
        title_column,
        label_column,
        date_column,
        embedding_model,
        n_neighbors,
        clustering,
        min_cluster_size,
        min_samples,
        n_clusters,
        nr_topics,
        outliers,
        stop_words,
    ]
    fit_outputs = [state, summary, timings, agreement, table, topic_choice, downloads, datamap, map_status]
    fit_event = fit_button.click(fit, fit_inputs, fit_outputs, **private, **GPU_EVENT)
    fit_event.then(
        draw_plots,
        [state, hide_annotations],
        [documents_map, barchart, heatmap, hierarchy],
        **private,
        **CPU_EVENT,
    )
    cancel.click(None, None, None, cancels=[fit_event], **private)
    topic_choice.change(show_topic, [state, topic_choice], [words, detail], **private, **CPU_EVENT)
    table.select(pick_row, state, topic_choice, **private, **CPU_EVENT)
    for trigger in (search_button.click, query.submit):
        trigger(search, [state, query], found, **private, **GPU_EVENT)
    hide_annotations.change(draw_map, [state, hide_annotations], documents_map, **private, **CPU_EVENT)
    static_button.click(draw_static, state, datamap_static, **private, **CPU_EVENT)
    map_button.click(build_map, [state, map_extras], [datamap, map_status, downloads], **private, **CPU_EVENT)
    representations_button.click(
        compare,
        [state, kinds, diversity, generator, generation_topics, prompt],
        representations,
        **private,
        **GPU_EVENT,
    )

    # -- public API ----------------------------------------------------------------------------------------
    def topics_fit(
        corpus: str = "wikipedia",
        n_neighbors: int = 15,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        nr_topics: int | None = None,
        stop_words: bool = True,
    ) -> dict[str, Any]:
        """Fit BERTopic on a named corpus ("wikipedia" offline, "arxiv_nlp" with the Hub) with the book's
        pipeline (stop_words: drop English stop words from the topic words). Returns the topic table, stage
        times (seconds; cached stages 0), and agreement with the corpus's labels (NMI/ARI over all
        documents and over non-outliers) where it has labels."""
        run, data = api_run(corpus, n_neighbors, min_cluster_size, min_samples, nr_topics, stop_words)
        table = topics.topic_table(run)
        return {
            "topics": table.to_dict(orient="records"),
            "n_topics": run.n_topics,
            "outlier_share": run.outlier_share,
            "timings": run.timings,
            "cached": run.cached,
            "agreement": topics.agreement(run.topics, data.labels),
            "notes": [*data.notes, *run.notes],
        }

    def topics_search(
        query: str,
        top_n: int = 5,
        corpus: str = "wikipedia",
        n_neighbors: int = 15,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        nr_topics: int | None = None,
        stop_words: bool = True,
    ) -> list[dict[str, Any]]:
        """BERTopic's find_topics(query): the topics closest to the query, best first, with cosine
        similarity, for the model topics_fit fits with the same parameters."""
        run, _ = api_run(corpus, n_neighbors, min_cluster_size, min_samples, nr_topics, stop_words)
        return [
            {"topic": t, "similarity": s, "name": name}
            for t, s, name in topics.search(run, query, int(top_n))
        ]

    def topics_representations(
        kinds: list[str] | None = None,
        diversity: float = 0.2,
        max_topics: int = 10,
        corpus: str = "wikipedia",
        n_neighbors: int = 15,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        nr_topics: int | None = None,
        stop_words: bool = True,
    ) -> list[dict[str, Any]]:
        """The book's representation table: per topic the c-TF-IDF words ("Original") and the words of
        each of kinds ("keybert", "mmr", "generation"), for the first max_topics topics."""
        run, _ = api_run(corpus, n_neighbors, min_cluster_size, min_samples, nr_topics, stop_words)
        table = topics.compare_representations(
            run,
            run.docs,
            kinds=tuple(kinds or ("keybert", "mmr")),
            diversity=float(diversity),
            max_topics=int(max_topics),
            generation_topics=int(max_topics),
        )
        return table.to_dict(orient="records")

    for endpoint in (topics_fit, topics_search, topics_representations):
        gr.api(user_errors(endpoint), api_name=endpoint.__name__, **GPU_EVENT)


def topic_plots_iframe(page: str) -> str:
    """The interactive map in an isolated iframe (Gradio's HTML component runs no scripts itself)."""
    from lab.attention_view import iframe

    return iframe(page, 800)
