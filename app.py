"""LLM Lab: the interactive companion to *Hands-On Large Language Models* (Alammar & Grootendorst).

``python app.py`` serves the lab (see ``lab/config.py`` for the settings). Importing this module builds
the page but loads no model: models load on first use, or at start with ``LAB_PRELOAD``.
"""

from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
# A server draws off-screen (datamapplot uses pyplot), from threads: the Agg backend, chosen before any
# import of matplotlib so that choosing it costs no import at start.
os.environ.setdefault("MPLBACKEND", "Agg")

import gradio as gr  # noqa: E402

from lab import models  # noqa: E402
from lab.config import Settings  # noqa: E402
from tabs import attention, clip_search, finetune, system, tokenizers, topics, vision_chat  # noqa: E402

HEADER = """
# LLM Lab
The hands-on companion to *Hands-On Large Language Models* (Jay Alammar & Maarten Grootendorst, O'Reilly).
Each tab runs one of the book's demonstrations on real models. Models load on first use, once, and are
shared by every tab and every user; the System panel at the bottom shows what is loaded where.
"""

# System fonts only: the default theme would fetch its web font from a CDN, and classrooms may be offline.
THEME = gr.themes.Soft(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    """Assemble the lab's page: header, one tab per chapter demonstration, System panel."""
    settings = settings or Settings.from_env()
    with gr.Blocks(title="LLM Lab") as demo:
        gr.Markdown(HEADER)
        with gr.Tabs():
            with gr.Tab("Tokenizers · ch. 2", id="tokenizers"):
                tokenizers.build(demo, settings)
            with gr.Tab("Attention & embeddings · ch. 2–3", id="attention"):
                attention.build(demo, settings)
            with gr.Tab("Topic modelling · ch. 5", id="topics"):
                topics.build(demo, settings)
            with gr.Tab("CLIP search · ch. 9", id="clip"):
                clip_search.build(demo, settings)
            with gr.Tab("BLIP-2 chat · ch. 9", id="vision-chat"):
                vision_chat.build(demo, settings)
            with gr.Tab("QLoRA fine-tune · ch. 12", id="finetune"):
                finetune.build(demo, settings)
        system.build(demo)
    return demo


demo = build_demo()


def serve(demo: gr.Blocks, settings: Settings, *, block: bool = True) -> str:
    """Queue and launch ``demo`` as configured; returns its local URL (``block=False`` for tests)."""
    settings.check()
    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1).launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        auth=settings.auth or None,
        max_file_size=settings.max_file_size,
        theme=THEME,
        ssr_mode=False,
        footer_links=["api", "settings"],
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return demo.local_url


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    settings.check()
    if settings.preload:
        for model_id, outcome in models.preload(settings.preload).items():
            logging.info("preload %s: %s", model_id, outcome)
    serve(demo, settings)


if __name__ == "__main__":
    main()
