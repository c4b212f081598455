"""The "System" panel: what the shared model cache holds, how full each device is, the queues, and the
serving engine that generates when one is configured (``LAB_GENERATION_URL``)."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from lab import cache, device, engine, hub, render
from lab.sessions import owner_of
from tabs.instructor import jobs_html, queue_html

QUEUE_TICK_S = 2.0  # the open panel redraws the queues this often
HEADERS = ["model", "device", "dtype", "MB", "hits", "misses", "load s", "last use", "in use"]


def cache_rows() -> list[list[Any]]:
    now = time.time()
    return [
        [
            s.key,
            s.device,
            s.dtype,
            round(s.nbytes / 1e6, 1),
            s.hits,
            s.misses,
            round(s.load_seconds, 2),
            f"{now - s.last_used:.0f} s ago",
            s.leases,
        ]
        for s in cache.stats()
    ]


def memory_markdown() -> str:
    placement = device.select()
    lines = [f"Models run on **{placement.device}** in **{str(placement.dtype).removeprefix('torch.')}**."]
    for row in device.memory_report():
        used, total = row["used"] / 1024**3, row["total"] / 1024**3
        budget = cache.CACHE.budget(row["device"].split(":")[0]) / 1024**3
        held = cache.CACHE.used(row["device"].split(":")[0]) / 1024**3
        lines.append(
            f"- {row['device']}: {used:.1f} / {total:.1f} GiB in use; "
            f"the model cache holds {held:.2f} GiB of its {budget:.1f} GiB budget"
        )
    if device.on_zero_gpu():
        lines.append("- ZeroGPU: a GPU is attached only while a model call runs.")
    lines.append(f"- {hub.status()}")
    return "\n".join(lines)


def engine_markdown() -> str:
    """The serving engine: where, whether it is healthy, what it serves ("" when none is configured)."""
    report = engine.status()
    if report is None:
        return ""
    health = "healthy" if report["healthy"] else "**not answering**"
    lines = [f"- Generation engine at `{report['url']}`: {health}."]
    if report["error"]:
        lines.append(f"  ({report['error']}); generation requests fail with a message until it is back.")
    if report["models"]:
        lines.append(f"- It serves: {', '.join(f'`{name}`' for name in report['models'])}.")
    routes = "; ".join(f"{lab_id} → `{name}`" for lab_id, name in report["routes"].items())
    lines.append(f"- Routed there: {routes or 'every generation model, under its own id'}.")
    return "\n".join(lines)


def refresh(request: gr.Request) -> tuple[str, str, str]:
    """Inputs: none. Outputs: the model cache, memory and engine, the queues (the viewer's own requests
    as "you"; other students by login, or by an anonymous label when they have none)."""
    rows = cache_rows()
    caption = "Model cache, shared by every tab and user" + ("" if rows else ": nothing loaded yet")
    served = engine_markdown()
    memory = memory_markdown() + (f"\n{served}" if served else "")
    viewer = owner_of(request)
    return render.table(HEADERS, rows, caption), memory, queue_html(viewer) + jobs_html(viewer)


def build(demo: gr.Blocks) -> None:
    """The System accordion; it refreshes when the page loads, on its button, and every few seconds
    while it is open."""
    with gr.Accordion("System: loaded models, memory and queues", open=False) as panel:
        memory = gr.Markdown()
        table = gr.HTML(elem_id="system-cache")
        queues = gr.HTML(elem_id="system-queue")
        button = gr.Button("Refresh", size="sm", elem_id="system-refresh")
        timer = gr.Timer(QUEUE_TICK_S, active=False)
    outputs = [table, memory, queues]
    quiet: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    button.click(refresh, None, outputs, **quiet)
    panel.expand(refresh, None, outputs, **quiet).then(lambda: gr.Timer(active=True), None, timer, **quiet)
    panel.collapse(lambda: gr.Timer(active=False), None, timer, **quiet)
    timer.tick(refresh, None, outputs, show_progress="hidden", **quiet)
    demo.load(refresh, None, outputs, **quiet)
