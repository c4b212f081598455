"""What the topic tab shows, as Markdown, tables and figures: pure functions of a run, no Gradio."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lab.links import tokenizer_link
from lab.topics.collapse import Collapse, Fix, detect_collapse
from lab.topics.corpora import Corpus
from lab.topics.errors import TopicInputError
from lab.topics.plots import topic_labels
from lab.topics.results import (
    TopicRun,
    agreement,
    main_labels,
    representative_docs,
    short_label,
    topic_table,
)
from lab.topics.stability import OutlierStrategy, SeedAgreement, SweepPoint

STAGE_NAMES = {
    "import": "Loading BERTopic, UMAP, HDBSCAN (first fit only)",
    "embeddings": "Embeddings",
    "umap": "UMAP → 5-d (clustering)",
    "umap_2d": "UMAP → 2-d (maps)",
    "clustering": "Clustering",
    "ctfidf": "c-TF-IDF (BERTopic)",
    "outliers": "Outlier reduction",
}


def timings_markdown(run: TopicRun) -> str:
    """Seconds per stage, and whether each came from a cache, as a small table."""
    lines = ["| stage | seconds | |", "| --- | ---: | --- |"]
    for key, name in STAGE_NAMES.items():
        if key in run.timings:
            how = "cached" if run.cached.get(key) else "ran"
            lines.append(f"| {name} | {run.timings[key]:.2f} | {how} |")
        elif key == "umap_2d":
            lines.append(f"| {name} | | when a map is first drawn |")
    lines.append(f"| **total** | **{run.timings['total']:.2f}** | |")
    return "\n".join(lines)


def _text(value: Any) -> str:
    """Text from a document, a file or a form, made inert for Markdown (its markup shows as written)."""
    return html.escape(str(value), quote=False)


def summary_markdown(run: TopicRun, corpus: Corpus) -> str:
    """Topics, outliers and settings in one paragraph; the corpus's source; the notes of the way."""
    params = run.params
    clustering = (
        f"HDBSCAN min_cluster_size={params['hdbscan']['min_cluster_size']}, "
        f"min_samples={params['hdbscan']['min_samples'] or 'same'}."
        if params["clustering"] == "hdbscan"
        else f"k-means with {params['n_clusters']} clusters."
    )
    paragraphs = [
        f"**{run.n_topics} topics** in {len(run.topics):,} documents; "
        f"**{run.outlier_share:.0%} outliers** (topic -1). Embeddings: `{_text(params['embedding_model'])}`; "
        f"UMAP n_neighbors={params['umap']['n_neighbors']}, {clustering}"
    ]
    if corpus.source:
        paragraphs.append(f"<small>Corpus: {_text(corpus.source)}</small>")
    notes = [f"- {_text(note)}" for note in [*corpus.notes, *run.notes]]
    if notes:
        paragraphs.append("\n".join(notes))
    return "\n\n".join(paragraphs)


def collapse_markdown(collapse: Collapse | None, fix: Fix | None) -> str:
    """A collapse in plain words, and the setting that undoes it (the button below offers it)."""
    if collapse is None:
        return ""
    if fix is None:
        advice = (
            "None of the nearby settings tried (min_cluster_size a little up or down, leaf selection) "
            "gives more topics here: try a smaller min_cluster_size, a larger n_neighbors, or k-means."
        )
    else:
        advice = (
            f"**{_setting_words(fix.changed)}** gives {fix.n_topics} topics with {fix.outlier_share:.0%} "
            "outliers on the same UMAP (one click below: nothing but the clustering and c-TF-IDF run again)."
        )
    return f"⚠️ **The topics collapsed.** {collapse.explanation()}\n\n{advice}"


def _setting_words(changed: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in changed.items())


def agreement_markdown(result: dict[str, Any] | None) -> str:
    """:func:`lab.topics.agreement`'s result in words, with what the parameters do to it."""
    if result is None:
        return "*No labels for this corpus: nothing to compare the topics with.*"
    non, ari_non = result["nmi_non_outliers"], result["ari_non_outliers"]
    if non is None:
        return f"NMI over all documents: {result['nmi_all']:.2f}; every document is an outlier."
    return (
        f"**Agreement with the {result['labels']} labels** (1 = the same grouping, 0 = unrelated). "
        f"NMI: **{non:.2f}** over the {1 - result['outlier_share']:.0%} of documents with a topic, "
        f"**{result['nmi_all']:.2f}** over all (outliers counted as one more topic). "
        f"ARI: {ari_non:.2f} / {result['ari_all']:.2f}. "
        "Smaller min_cluster_size → more, finer topics; larger n_neighbors → broader ones; outlier "
        "reduction trades purity for coverage."
    )


def topic_rows(run: TopicRun, labels: Sequence[str] | None) -> pd.DataFrame:
    """The topic table, with each topic's most common label when the corpus has labels."""
    table = topic_table(run)
    if labels is not None:
        top = {t: f"{label} ({share:.0%})" for t, (label, share) in main_labels(run.topics, labels).items()}
        table.insert(3, "Main label", [top.get(t, "") for t in table["Topic"]])
    return table


def detail_markdown(run: TopicRun, topic: int) -> str:
    """A topic's size and its representative documents (as BERTopic chose them)."""
    count = int(run.info.loc[run.info.Topic == topic, "Count"].iloc[0])
    lines = [f"**Topic {topic}** · {count:,} documents · representative documents (c-TF-IDF):"]
    for title, text in representative_docs(run, topic):
        head = f"**{_text(title)}**: " if title else ""
        follow = f' [tokens ↗]({tokenizer_link(text[:2000])} "Open this document in the tokenizer tab")'
        lines.append(f"- {head}{_text(short_label(text, 320))}{follow}")
    return "\n".join(lines)


def topic_choices(run: TopicRun) -> list[tuple[str, int]]:
    """(label, topic) pairs for a topic picker, in the topic table's order."""
    labels = topic_labels(run)
    return [(labels[t] if t != -1 else "-1: outliers", int(t)) for t in run.info["Topic"]]


def first_topic(run: TopicRun) -> int:
    """The topic to show first: the largest one that is not the outliers."""
    choices = topic_choices(run)
    return next((value for _, value in choices if value != -1), choices[0][1])


def fit_report(run: TopicRun, corpus: Corpus) -> dict[str, Any]:
    """A run as the web API returns it: topic table rows, counts, stage times, agreement, notes, and what
    HDBSCAN did if its topics collapsed (:func:`lab.topics.detect_collapse`; None if they did not)."""
    collapse = detect_collapse(run)
    return {
        "topics": topic_table(run).to_dict(orient="records"),
        "n_topics": run.n_topics,
        "outlier_share": run.outlier_share,
        "timings": run.timings,
        "cached": run.cached,
        "agreement": agreement(run.topics, corpus.labels),
        "notes": [*corpus.notes, *run.notes],
        "collapse": None if collapse is None else collapse.explanation(),
    }


def search_table(hits: list[tuple[int, float, str]]) -> pd.DataFrame:
    """:func:`lab.topics.search`'s hits as a table: topic, similarity (3 decimals), name."""
    return pd.DataFrame(
        [(t, round(s, 3), name) for t, s, name in hits], columns=["topic", "similarity", "name"]
    )


def figure_or_message(draw: Callable[[TopicRun], Any], run: TopicRun) -> Any:
    """A figure, or, where the run has too few topics for it, an empty figure whose title says so."""
    try:
        return draw(run)
    except TopicInputError as error:
        import plotly.graph_objects as go

        return go.Figure().update_layout(title=str(error), height=120)


def upload_status(corpus: Corpus | None = None, columns: Sequence[str] | None = None) -> str:
    """What an uploaded file holds: its documents (a text file) or its columns (a CSV file)."""
    if columns is not None:
        return f"Columns: {_text(', '.join(columns))}. Choose which holds the text."
    if corpus is not None:
        return f"{len(corpus):,} documents (one per line). {_text(' '.join(corpus.notes))}"
    return ""


def map_status(page: str, path: Path, seconds: float) -> str:
    """How the interactive map was built, and where to download it."""
    return (
        f"Built in {seconds:.1f} s ({len(page) / 1e6:.1f} MB, self-contained: download "
        f"`{_text(path.name)}` under Downloads to open it in any browser, offline)."
    )


def map_frame(page: str, height: int = 800) -> str:
    """The interactive map in an isolated iframe (Gradio's HTML component runs no scripts itself)."""
    from lab.attention_view import iframe

    return iframe(page, height)


def sweep_markdown(points: Sequence[SweepPoint], current: int) -> str:
    """What the sweep shows, in words: the range of topics and outliers, where the run's own value sits."""
    if not points:
        return "*Too few documents for a sweep.*"
    fewest, most = min(points, key=lambda p: p.n_topics), max(points, key=lambda p: p.n_topics)
    return (
        f"From min_cluster_size **{most.min_cluster_size}** (**{most.n_topics}** topics, "
        f"{most.outlier_share:.0%} outliers) to **{fewest.min_cluster_size}** (**{fewest.n_topics}** topics, "
        f"{fewest.outlier_share:.0%} outliers); this run uses {current}. Each point is one HDBSCAN on the "
        "same cached UMAP map: small values split dense regions into many topics, large ones keep only "
        "big groups and call the rest outliers."
    )


def seeds_table(agreement: SeedAgreement) -> pd.DataFrame:
    """One row per UMAP seed (topics, outliers) and one per pair of seeds (ARI: 1 = the same topics)."""
    rows = [[f"seed {r.seed}", r.n_topics, f"{r.outlier_share:.0%}", ""] for r in agreement.runs]
    rows += [[f"seeds {a} vs {b}", "", "", f"{ari:.2f}"] for (a, b), ari in agreement.ari.items()]
    return pd.DataFrame(rows, columns=["UMAP run", "topics", "outliers", "agreement (ARI)"])


def seeds_markdown(agreement: SeedAgreement) -> str:
    counts = sorted({r.n_topics for r in agreement.runs})
    return (
        f"Same documents, same settings, only UMAP's random seed changed: {', '.join(map(str, counts))} "
        f"topics, mean agreement ARI **{agreement.mean_ari:.2f}** (1 means the same assignment). UMAP's "
        "layout is random; another machine's floating point moves it a little too, which is why topic "
        "numbers are not comparable between runs."
    )


def outliers_table(rows: Sequence[OutlierStrategy]) -> pd.DataFrame:
    """BERTopic's outlier strategies side by side: outliers before and after, moved, NMI, seconds."""
    return pd.DataFrame(
        [
            [r.strategy, r.outliers_before, r.outliers_after, r.moved, _share(r.nmi), f"{r.seconds:.1f}"]
            for r in rows
        ],
        columns=["strategy", "outliers before", "outliers after", "moved into topics", "NMI", "seconds"],
    )


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
