"""Pictures of a topic model (chapter 5): BERTopic's plotly figures and a sampled documents map.

Every function takes a :class:`lab.topics.TopicRun` and returns a plotly figure; none touches a UI, so a
notebook can show them too::

    from lab import topics
    run = topics.fit(corpus.docs, titles=corpus.titles, embeddings=corpus.embeddings)
    topics.documents_map(run).show()
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Sequence
from typing import Any

import numpy as np

from lab.topics.errors import TopicInputError
from lab.topics.results import TopicRun

MAP_POINTS = 5_000  # a plotly map larger than this gets slow in the browser: sample
OUTLIER_COLOUR = "#c8ccd0"
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
    "#756bb1", "#636363", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#969696",
]  # fmt: skip


def topic_labels(run: TopicRun, n_words: int = 3) -> dict[int, str]:
    """A short label per topic: its id and first words (``"3: football, league, cup"``)."""
    labels = {}
    for topic in sorted(set(run.topics)):
        if topic == -1:
            labels[topic] = "outliers"
            continue
        words = [w for w, _ in run.model.get_topic(topic) or [] if w][:n_words]
        labels[topic] = f"{topic}: {', '.join(words)}"
    return labels


def hover_texts(run: TopicRun, width: int = 90) -> list[str]:
    """What a map shows on hover: the titles, else each document's beginning on one line."""
    if run.titles is not None:
        return list(run.titles)
    return [d if len(d) <= width else d[: width - 1] + "…" for d in (" ".join(x.split()) for x in run.docs)]


def sample_indices(n: int, max_points: int, seed: int = 42) -> np.ndarray:
    """Which documents a map shows: all of them up to ``max_points``, else a random sample (sorted)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def documents_map(
    run: TopicRun, *, max_points: int = MAP_POINTS, hide_annotations: bool = True, seed: int = 42
) -> Any:
    """The documents in 2-d, coloured by topic, titles on hover (as BERTopic's ``visualize_documents``).

    Corpora larger than ``max_points`` are drawn from a random sample, and the title says how many.
    """
    import plotly.graph_objects as go

    points = run.reduced_2d
    shown = sample_indices(len(points), max_points, seed)
    topics = np.asarray(run.topics)
    hover = hover_texts(run)
    labels = topic_labels(run)
    figure = go.Figure()
    for topic in sorted(set(topics[shown].tolist()), key=lambda t: (t == -1, t)):
        chosen = shown[topics[shown] == topic]
        outlier = topic == -1
        colour = OUTLIER_COLOUR if outlier else PALETTE[topic % len(PALETTE)]
        figure.add_trace(
            go.Scattergl(
                x=points[chosen, 0],
                y=points[chosen, 1],
                mode="markers",
                name=labels[topic],
                marker={"size": 4 if outlier else 5, "color": colour, "opacity": 0.35 if outlier else 0.75},
                hovertext=[hover[i] for i in chosen],
                hovertemplate="%{hovertext}<extra>" + html_lib.escape(labels[topic]) + "</extra>",
            )
        )
        if not hide_annotations and not outlier and len(chosen):
            x, y = np.median(points[chosen], axis=0)
            figure.add_annotation(x=x, y=y, text=labels[topic], showarrow=False, font={"size": 11})
    total = len(points)
    count = f"all {total:,} documents" if len(shown) == total else f"{len(shown):,} of {total:,} documents"
    sampled = "" if len(shown) == total else " (a random sample, for speed)"
    figure.update_layout(
        title=f"Documents and topics: {count} shown{sampled}; grey: outliers",
        height=650,
        xaxis={"visible": False},
        yaxis={"visible": False},
        plot_bgcolor="white",
        legend={"itemsizing": "constant", "font": {"size": 10}},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return figure


def need_topics(run: TopicRun, minimum: int, what: str) -> None:
    """Refuse a picture that needs more topics than the run has (a :class:`TopicInputError` that says so)."""
    if run.n_topics < minimum:
        raise TopicInputError(f"The {what} needs at least {minimum} topics; this model has {run.n_topics}.")


def barchart(run: TopicRun, top_n_topics: int = 8, n_words: int = 5) -> Any:
    """BERTopic's ``visualize_barchart``: the top words of the largest topics, by c-TF-IDF weight."""
    need_topics(run, 1, "bar chart")
    return run.model.visualize_barchart(top_n_topics=top_n_topics, n_words=n_words, height=230, width=260)


def heatmap(run: TopicRun, n_clusters: int = 30) -> Any:
    """BERTopic's ``visualize_heatmap``: cosine similarity of the topic embeddings, grouped in clusters."""
    need_topics(run, 2, "heatmap")
    clusters = min(n_clusters, run.n_topics - 1) if run.n_topics > 2 else None
    return run.model.visualize_heatmap(n_clusters=clusters, width=820, height=820)


def hierarchy(run: TopicRun) -> Any:
    """BERTopic's ``visualize_hierarchy``: how the topics would merge (Ward linkage of their c-TF-IDF)."""
    need_topics(run, 2, "hierarchy")
    return run.model.visualize_hierarchy(width=1000, height=max(400, 22 * run.n_topics + 120))


def word_bars(words: Sequence[tuple[str, float]], title: str) -> Any:
    """One topic's words and their c-TF-IDF weights (``get_topic(n)``) as horizontal bars."""
    import plotly.graph_objects as go

    figure = go.Figure(go.Bar(x=[w for _, w in words], y=[t for t, _ in words], orientation="h"))
    figure.update_layout(
        title=title,
        height=60 + 26 * len(words),
        yaxis={"autorange": "reversed"},
        xaxis={"title": "c-TF-IDF weight"},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return figure


def stability_sweep(points: Sequence[Any]) -> Any:
    """Topics, outlier share and NMI against ``min_cluster_size`` (``lab.topics.sweep_min_cluster_size``):
    topics on the left axis, the two shares (0–1) on the right."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    sizes = [p.min_cluster_size for p in points]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=sizes, y=[p.n_topics for p in points], name="topics", mode="lines+markers"))
    figure.add_trace(
        go.Scatter(x=sizes, y=[p.outlier_share for p in points], name="outlier share", mode="lines+markers"),
        secondary_y=True,
    )
    if all(p.nmi is not None for p in points):
        nmi = [p.nmi for p in points]
        nmi_line = go.Scatter(x=sizes, y=nmi, name="NMI with the labels", mode="lines+markers")
        figure.add_trace(nmi_line, secondary_y=True)
    figure.update_xaxes(title_text="min_cluster_size", type="log")
    figure.update_yaxes(title_text="topics", secondary_y=False)
    figure.update_yaxes(title_text="share (0–1)", range=[0, 1], secondary_y=True)
    # The legend under the axis: above it, the page's plot label would cover it.
    figure.update_layout(height=400, margin={"t": 30, "b": 90}, legend={"orientation": "h", "y": -0.3})
    return figure
