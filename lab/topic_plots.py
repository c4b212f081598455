"""Pictures of a topic model (chapter 5): BERTopic's plotly figures, a sampled documents map, and
datamapplot's static figure and interactive map, whose scripts and font are inlined from ``assets/``.

Every function takes a :class:`lab.topics.TopicRun` and returns a figure (plotly or matplotlib) or a
complete HTML page; none touches a UI, so a notebook can show them too::

    from lab import topics, topic_plots
    run = topics.fit(corpus.docs, titles=corpus.titles, embeddings=corpus.embeddings)
    topic_plots.documents_map(run).show()
    html = topic_plots.interactive_map(run)          # works without internet
"""

from __future__ import annotations

import base64
import functools
import html as html_lib
import json
import lzma
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lab import config
from lab.topics import TopicRun

MAP_POINTS = 5_000  # a plotly map larger than this gets slow in the browser: sample
DATAMAP_JS = Path(__file__).resolve().parent.parent / "assets" / "js" / "datamapplot"
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


def _hover_texts(run: TopicRun, width: int = 90) -> list[str]:
    if run.titles is not None:
        return list(run.titles)
    return [d if len(d) <= width else d[: width - 1] + "…" for d in (" ".join(x.split()) for x in run.docs)]


def sample_indices(n: int, max_points: int, seed: int = 42) -> np.ndarray:
    """Which documents a map shows: all of them up to ``max_points``, else a random sample (sorted)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


# -- plotly ----------------------------------------------------------------------------------------------


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
    hover = _hover_texts(run)
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


def _need_topics(run: TopicRun, minimum: int, what: str) -> None:
    if run.n_topics < minimum:
        raise ValueError(f"The {what} needs at least {minimum} topics; this model has {run.n_topics}.")


def barchart(run: TopicRun, top_n_topics: int = 8, n_words: int = 5) -> Any:
    """BERTopic's ``visualize_barchart``: the top words of the largest topics, by c-TF-IDF weight."""
    _need_topics(run, 1, "bar chart")
    return run.model.visualize_barchart(top_n_topics=top_n_topics, n_words=n_words, height=230, width=260)


def heatmap(run: TopicRun, n_clusters: int = 30) -> Any:
    """BERTopic's ``visualize_heatmap``: cosine similarity of the topic embeddings, grouped in clusters."""
    _need_topics(run, 2, "heatmap")
    clusters = min(n_clusters, run.n_topics - 1) if run.n_topics > 2 else None
    return run.model.visualize_heatmap(n_clusters=clusters, width=820, height=820)


def hierarchy(run: TopicRun) -> Any:
    """BERTopic's ``visualize_hierarchy``: how the topics would merge (Ward linkage of their c-TF-IDF)."""
    _need_topics(run, 2, "hierarchy")
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


# -- datamapplot ------------------------------------------------------------------------------------------


def datamap_static(run: TopicRun, topics: Sequence[int] | None = None, *, width: int = 1200) -> Any:
    """The book's ``visualize_document_datamap`` (a matplotlib figure): the first 20 topics labelled.

    System fonts only: datamapplot would otherwise fetch its font from Google Fonts.
    """
    _need_topics(run, 1, "data map")
    topics = list(range(min(20, run.n_topics))) if topics is None else list(topics)
    return run.model.visualize_document_datamap(
        _hover_texts(run),
        topics=topics,
        reduced_embeddings=run.reduced_2d,
        width=width,
        height=int(width * 0.75),
        datamap_kwds={
            "label_font_size": 11,
            "label_wrap_width": 20,
            "use_medoids": True,
            "use_system_fonts": True,
            "font_family": "DejaVu Sans",
        },
    )


@functools.lru_cache(maxsize=1)
def _bundle() -> dict[str, Any]:
    """The bundled manifest: CDN address → script file, and the font's faces."""
    return json.loads((DATAMAP_JS / "manifest.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=8)
def _script(url: str) -> str:
    info = _bundle()["scripts"].get(url)
    if info is None:
        raise RuntimeError(
            f"datamapplot asks for {url}, which the lab does not bundle: add it to SCRIPTS in "
            "scripts/build_topic_assets.py and run it with --only js"
        )
    text = lzma.decompress((DATAMAP_JS / info["file"]).read_bytes()).decode("utf-8")
    # Inside <script>, "</script" would end the element early; "<\/script" means the same to JavaScript.
    text = text.replace("</script", "<\\/script")
    return f"/* {info['package']}@{info['version']} ({info['licence']}), bundled by LLM Lab */\n{text}"


@functools.lru_cache(maxsize=1)
def _font_file() -> str:
    """datamapplot's offline font cache format, written once from the bundled woff2 files."""
    fonts = {}
    for family, info in _bundle()["fonts"].items():
        fonts[family] = [
            {
                "style": face["style"],
                "weight": str(face["weight"]),
                "unicode_range": info["unicode_range"],
                "type": "woff2",
                "content": base64.b64encode((DATAMAP_JS / face["file"]).read_bytes()).decode("ascii"),
            }
            for face in info["faces"]
        ]
    path = config.cache_dir() / "topics" / "datamapplot-fonts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fonts))
    return str(path)


_render_lock = threading.Lock()
_OFFLINE_BLOCK = re.compile(r"<script>\s*// Offline mode enabled.*?</script>", re.S)
_MISSING_URL = re.compile(r"URL not found in cache: (\S+?)'")
_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref=\"https?://[^>]*>\s*", re.S)
_REMOTE_REFERENCE = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"(https?://[^\"]+)\"")


_SCRIPT_BODY = re.compile(r"(<script\b[^>]*>).*?(</script>)", re.S)


def remote_references(page: str) -> list[str]:
    """Addresses on the internet that a page's tags would load (none for the lab's maps).

    Script bodies are skipped: deck.gl's error messages quote ``<script src="https://unpkg.com/…">``.
    """
    return _REMOTE_REFERENCE.findall(_SCRIPT_BODY.sub(r"\1\2", page))


def _offline_page(page: str) -> str:
    """Inline the bundled scripts where datamapplot's offline mode left their addresses; drop remote links."""
    block = _OFFLINE_BLOCK.search(page)
    if block is None:
        raise RuntimeError("datamapplot's HTML has changed: its offline-mode script block was not found")
    urls = _MISSING_URL.findall(block.group(0))
    scripts = "".join(f"<script>{_script(url)}</script>\n" for url in urls)
    replacement = "<script>const OFFLINE_MODE = true;</script>\n" + scripts
    page = page[: block.start()] + replacement + page[block.end() :]
    # Google Fonts, bootstrap and font-awesome links: the font is embedded, nothing uses the other two.
    page = _REMOTE_LINK.sub("", page)
    remaining = remote_references(page)
    if remaining:
        raise RuntimeError(f"the map would still load {remaining[0]} from the internet")
    return page


def interactive_map(
    run: TopicRun,
    *,
    title: str = "Topics",
    sub_title: str | None = None,
    dates: Sequence[str] | None = None,
    height: int = 760,
    medoids: bool = False,
    boundaries: bool = False,
) -> str:
    """datamapplot's interactive map as one self-contained HTML page: zoom, hover titles, search, and
    lasso selection (shift-drag) listing a sample of the selected documents.

    deck.gl, apache-arrow, d3, jQuery and the Roboto font come from ``assets/js/datamapplot``
    (see its ``LICENSES.md``), so the page loads nothing from the internet. ``dates`` (parsable by pandas,
    all of them) add a histogram to filter by time.

    ``medoids`` (labels at each topic's medoid rather than its centroid) and ``boundaries`` (a polygon
    around each topic) are off by default: their numba code compiles on first use in each process, which
    takes 5–10 s on two cores, while the map itself takes well under a second.
    """
    import datamapplot
    import pandas as pd
    from datamapplot import interactive_rendering
    from datamapplot.selection_handlers import DisplaySample

    labels = topic_labels(run)
    names = np.array([labels[t] if t != -1 else "Unlabelled" for t in run.topics], dtype=object)
    extra: dict[str, Any] = {}
    if dates is not None:
        parsed = pd.to_datetime(pd.Series(list(dates)), errors="coerce", format="mixed")
        if parsed.notna().all() and parsed.nunique() >= 2:  # datamapplot needs a date for every point
            extra["histogram_data"] = parsed.dt.strftime("%Y-%m-%d")
            extra["histogram_group_datetime_by"] = "year" if parsed.dt.year.nunique() > 3 else "month"
    fonts = _font_file()

    def bundled(offline_mode: bool, js_file: Any, font_file: Any) -> dict[str, Any]:
        # datamapplot would read (or download) its cache from the user's data folder; the lab has its own.
        return {"offline_mode_data": {}, "offline_mode_css_data": {}, "offline_mode_font_data_file": fonts}

    with _render_lock:  # the hook below is module-wide: one render at a time
        original = interactive_rendering.prepare_offline_mode_data
        interactive_rendering.prepare_offline_mode_data = bundled
        try:
            figure = datamapplot.create_interactive_plot(
                run.reduced_2d,
                names,
                hover_text=_hover_texts(run),
                enable_search=True,
                title=title,
                sub_title=sub_title or f"{len(run.topics):,} documents, {run.n_topics} topics",
                height=height,
                font_family="Roboto",
                use_medoids=medoids,
                cluster_boundary_polygons=boundaries,
                noise_label="Unlabelled",
                # One handler: DisplaySample and WordCloud both declare a global `shuffle` and clash.
                selection_handler=DisplaySample(),
                offline_mode=True,
                **extra,
            )
        finally:
            interactive_rendering.prepare_offline_mode_data = original
    return _offline_page(str(figure))


def save_interactive_map(page: str, path: str | Path) -> Path:
    """Write an interactive map page to ``path`` (it opens in any browser, offline)."""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
