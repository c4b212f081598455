"""datamapplot's pictures of a topic model: the book's static figure, and the interactive map as one
self-contained HTML page whose scripts and font are inlined from ``assets/js/datamapplot``::

    html = topics.interactive_map(run)          # works without internet
    topics.save_interactive_map(html, "map.html")
"""

from __future__ import annotations

import base64
import functools
import json
import lzma
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lab import config, paths
from lab.topics.plots import hover_texts, need_topics, topic_labels
from lab.topics.results import TopicRun

DATAMAP_JS = paths.JS / "datamapplot"


def datamap_static(run: TopicRun, topics: Sequence[int] | None = None, *, width: int = 1200) -> Any:
    """The book's ``visualize_document_datamap`` (a matplotlib figure): the first 20 topics labelled.

    System fonts only: datamapplot would otherwise fetch its font from Google Fonts.
    """
    need_topics(run, 1, "data map")
    topics = list(range(min(20, run.n_topics))) if topics is None else list(topics)
    return run.model.visualize_document_datamap(
        hover_texts(run),
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

    # The one private hook: datamapplot 0.7 has no parameter for its offline cache, so its module function
    # is swapped for the render. The hook is module-wide: one render at a time.
    with _render_lock:
        original = interactive_rendering.prepare_offline_mode_data
        interactive_rendering.prepare_offline_mode_data = bundled
        try:
            figure = datamapplot.create_interactive_plot(
                run.reduced_2d,
                names,
                hover_text=hover_texts(run),
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
