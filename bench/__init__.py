"""Measure the lab: ``python -m bench`` prints one table of every section, ``--json`` the same as JSON.

Every figure is measured in the one command on this machine, and speed is reported next to a baseline
measured in the same run (the book's or the naive way), as a ratio, so the numbers compare across machines.

Each section is a module of this package with one contract: ``TITLE`` (its heading) and
``run(quick: bool) -> Section`` (its rows, see :mod:`bench.report`); ``quick`` makes fewer repetitions.

- ``startup``: app import time and time to first page (``python app.py`` from the repository root);
- ``tokenizers``: ``tokens.compare`` warm against reloading every tokenizer on every call;
- ``attention``: the attention tab's calls warm against ``from_pretrained`` for each call;
- ``batching``: 16 students asking at once, batched across students against one at a time;
- ``topics``: first fit, refit and the interactive map against BERTopic refitting from scratch;
- ``clip``: batched indexing against one image at a time, exact search against a Python loop;
- ``big_gallery``: approximate CLIP search (faiss codes) against exact search at 100k vectors, its recall;
- ``vision_chat``: BLIP-2's time to first token and tokens per second, and its memory by dtype;
- ``finetune``: the classroom preset's training speed on the CPU (the book's settings on a GPU);
- ``engine``: 16 concurrent generations on llama.cpp's server against the in-process queue, one at a time.

The load test runs only when named (it takes minutes and launches the app): ``python -m bench classroom
--students 60 --minutes 10``, or ``make loadtest N=60 MINUTES=10`` (:mod:`bench.classroom`).

The GPU checks, run by hand on a CUDA machine, are in :mod:`bench.gpu`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.report import Section

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "startup",
    "tokenizers",
    "attention",
    "batching",
    "topics",
    "clip",
    "big_gallery",
    "vision_chat",
    "finetune",
    "engine",
)
# Run only when named: a load test launches the app and takes minutes. Its run() also takes options.
LOAD_SECTIONS = ("classroom",)


def run_section(name: str, quick: bool = False, **options: Any) -> Section:
    """Run one section by name (one of :data:`SECTIONS` or :data:`LOAD_SECTIONS`), importing its module
    only now; ``options`` go to a load section's ``run`` (students, minutes, out)."""
    if name not in SECTIONS + LOAD_SECTIONS:
        choices = ", ".join(SECTIONS + LOAD_SECTIONS)
        raise ValueError(f"unknown bench section {name!r}; choose from {choices}")
    return importlib.import_module(f"bench.{name}").run(quick, **options)
