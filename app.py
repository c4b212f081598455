"""LLM Lab: the interactive companion to *Hands-On Large Language Models* (Alammar & Grootendorst).

``python app.py`` serves the lab (see ``lab/config.py`` for the settings). Importing this module builds
the page but loads no model: models load on first use, or at start with ``LAB_PRELOAD``.
"""

from __future__ import annotations

import ctypes
import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
# A server draws off-screen (datamapplot uses pyplot), from threads: the Agg backend, chosen before any
# import of matplotlib so that choosing it costs no import at start.
os.environ.setdefault("MPLBACKEND", "Agg")

import gradio as gr  # noqa: E402

from lab import export, models, replicas  # noqa: E402
from lab.config import Settings  # noqa: E402
from tabs import (  # noqa: E402
    access,
    api_guard,
    attention,
    clip_search,
    common,
    finetune,
    instructor,
    links,
    system,
    tokenizers,
    topics,
    vision_chat,
)

HEADER = """
# LLM Lab
The hands-on companion to *Hands-On Large Language Models* (Jay Alammar & Maarten Grootendorst, O'Reilly).
Each tab runs one of the book's demonstrations on real models. Models load on first use, once, and are
shared by every tab and every user; the System panel at the bottom shows what is loaded where.
"""

# System fonts only: the default theme would fetch its web font from a CDN, and classrooms may be offline.
# Soft's light text colours are one shade darker, so that all text reaches WCAG AA contrast (4.5:1; the
# browser tests run axe-core): labels on their indigo-100 tag (indigo-500: 3.6:1, indigo-700: 6.4:1),
# white on primary buttons and chosen checkboxes (on indigo-500: 4.5:1, on 600: 6.3:1), the selected tab
# (the accent colour), and info and placeholder text (gray-400 on white: 2.5:1, gray-600: 7.6:1).
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
).set(
    block_label_text_color="*primary_700",
    block_title_text_color="*primary_700",
    button_primary_background_fill="*primary_600",
    button_primary_background_fill_hover="*primary_700",
    checkbox_label_background_fill_selected="*primary_600",
    color_accent="*primary_600",
    body_text_color_subdued="*neutral_600",
    # Soft's own page colour, named again: Gradio 6.31's set() resets it to white (it reads it back under
    # the name "background_primary").
    background_fill_primary="*neutral_50",
)


CACHE_SWEEP_S = 900  # how often old files are looked for in Gradio's cache

# (tab title, its id, its module): one tab per chapter demonstration, in book order.
TABS = [
    ("Tokenizers · ch. 2", "tokenizers", tokenizers),
    ("Attention & embeddings · ch. 2–3", "attention", attention),
    ("Topic modelling · ch. 5", "topics", topics),
    ("CLIP search · ch. 9", "clip", clip_search),
    ("BLIP-2 chat · ch. 9", "vision-chat", vision_chat),
    ("QLoRA fine-tune · ch. 12", "finetune", finetune),
]


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """Assemble the lab's page: header, the class's message, one tab per chapter demonstration, the
    instructor panel (shown to instructors only), System panel."""
    settings = settings or Settings.from_env()
    # Files Gradio received or wrote (uploads, results) go once older than a session lives.
    delete_cache = (CACHE_SWEEP_S, int(settings.session_ttl_s))
    with gr.Blocks(title="LLM Lab", delete_cache=delete_cache) as demo:
        gr.Markdown(HEADER)
        message_box = instructor.banner()
        links.palette_toggle()
        notices, items = {}, {}
        with gr.Tabs(elem_id="lab-tabs") as tabs:
            for title, tab_id, tab in TABS:
                with gr.Tab(title, id=tab_id) as items[tab_id]:
                    notices[tab_id] = instructor.pause_notice(tab_id)
                    tab.build(demo, settings)
        instructor.build(demo, settings, tabs, TABS, notices, message_box)
        links.wire(demo, items, settings)  # the address: shareable views, links between tabs
        system.build(demo)
        access.free_closed_sessions(demo, settings)
    return demo


demo = build_demo()


def serve(demo: gr.Blocks, settings: Settings, *, block: bool = True) -> str:
    """Queue and launch ``demo`` as configured; returns its local URL (``block=False`` for tests)."""
    settings.check()
    export.result_folder = access.result_folder  # each result's downloads readable by its student only
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1).launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        auth=settings.auth or None,
        max_file_size=settings.max_file_size,
        # Gradio's 40 worker threads for cheap events and model calls, plus one for each request that may
        # wait for a batch in the model queue (tabs.common), so that waiting never starves tokenizing.
        max_threads=40 + common.MODEL_WAITING_ROOM,
        # Login throttle, upload caps, students' private files; unknown API names (404, not 500); a
        # replica's name.
        app_kwargs={
            "middleware": [
                *access.middleware(settings),
                api_guard.middleware(demo),
                *replicas.middleware(settings.replica),
            ]
        },
        theme=THEME,
        head=links.head(),
        ssr_mode=False,
        footer_links=["api", "settings"],
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return demo.local_url


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Keep glibc's malloc to ``arenas`` arenas, as ``MALLOC_ARENA_MAX=2`` would (unless that is set).

    A server's model calls run in whichever worker thread holds the turn, and glibc gives threads their
    own arenas (up to eight per core), each keeping the memory its thread freed: with a class of
    students that reads as memory growing with every class. Nothing happens where glibc is absent.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl)
        return
    m_arena_max = -8  # glibc's M_ARENA_MAX option of mallopt
    libc.mallopt(m_arena_max, arenas)


def main() -> None:
    limit_malloc_arenas()  # first, before the server starts its threads
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    settings.check()
    if settings.preload:
        for model_id, outcome in models.preload(settings.preload).items():
            logging.info("preload %s: %s", model_id, outcome)
    serve(demo, settings)


if __name__ == "__main__":
    main()
