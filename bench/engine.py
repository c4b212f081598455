"""The ``engine`` section: 16 students ask at once, answered by a serving engine or by the app's queue.

The same 16 greedy generations (SmolLM2-135M-Instruct, a different prompt each, exactly ``new_tokens``
tokens each: end-of-text is ignored on both sides) run two ways in one command:

- baseline: in process, one at a time, as the app's GPU queue serves them (:func:`lab.attention.
  continue_text` without an engine); request *i* waits for the *i − 1* before it;
- lab: through llama.cpp's server (built by ``make engine-build``, started here with 16 slots), all 16 sent
  at once by 16 threads through the same :func:`lab.attention.continue_text` with ``LAB_GENERATION_URL``.

Each request's latency runs from the moment all 16 are asked to its last token. Reported: the total time
until every answer is complete and the 95th percentile latency. The engine reads the Q4_1 weights as they
are; the in-process model is the same checkpoint dequantised to float32 (the lab's SmolLM2 path), so part of
the gain is llama.cpp's kernels, part continuous batching: the table says what one request alone takes in
process too. Both sides get the same number of threads (:func:`lab.engine_server.default_threads`, half the
cores): on a machine shared with other work, torch's default of every core ran ~10× slower per request
here (its threads wait on each other when one loses its core), which would flatter the engine.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.report import Row, Section

TITLE = "Generation on a serving engine (llama.cpp) against the in-process queue"
STUDENTS = 16
PROMPTS = [
    f"Student {i + 1} writes about {topic}:"
    for i, topic in enumerate(
        [
            "the sea", "a train", "bread", "the moon", "a cat", "winter", "music", "a river",
            "mountains", "a library", "rain", "coffee", "a bicycle", "the city", "a garden", "stars",
        ]
    )
]  # fmt: skip


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _generate(prompt: str, new_tokens: int) -> str:
    from lab import attention, catalog

    *_, text = attention.continue_text(prompt, catalog.SMOLLM2, new_tokens)
    return text


def in_process(new_tokens: int, threads: int | None = None) -> list[float]:
    """Latencies (s) of the 16 requests served one at a time in this process, all asked at time 0, on
    ``threads`` torch threads (default: torch's own choice)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        _generate(PROMPTS[0], 2)  # load the model (and convert it, the first time) before the clock starts
        started, latencies = time.perf_counter(), []
        for prompt in PROMPTS:
            _generate(prompt, new_tokens)
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        torch.set_num_threads(before)


def on_engine(url: str, new_tokens: int) -> list[float]:
    """Latencies (s) of the 16 requests sent at once to the engine at ``url`` by 16 threads."""
    from lab import catalog

    os.environ["LAB_GENERATION_URL"] = url
    os.environ["LAB_GENERATION_MODELS"] = f"{catalog.SMOLLM2}=smollm2"
    try:
        _generate(PROMPTS[0], 2)  # the first request warms the engine's buffers
        started = time.perf_counter()

        def ask(prompt: str) -> float:
            _generate(prompt, new_tokens)
            return time.perf_counter() - started

        with ThreadPoolExecutor(STUDENTS) as pool:
            return list(pool.map(ask, PROMPTS))
    finally:
        del os.environ["LAB_GENERATION_URL"], os.environ["LAB_GENERATION_MODELS"]


def measure(new_tokens: int) -> dict[str, Any]:
    from lab.engine_server import EngineServer, default_threads, server_binary

    if not server_binary().exists():
        return {"skipped": f"{server_binary()} is missing: run `make engine-build`"}
    threads = default_threads()
    here = in_process(new_tokens, threads)
    with EngineServer(parallel=STUDENTS) as server:  # on the same number of threads
        there = on_engine(server.url, new_tokens)
    return {
        "requests": STUDENTS,
        "new_tokens": new_tokens,
        "cpus": os.cpu_count(),
        "threads": threads,
        "in_process_s": here,
        "engine_s": there,
        "in_process_total_s": max(here),
        "engine_total_s": max(there),
        "in_process_p95_s": _p95(here),
        "engine_p95_s": _p95(there),
        "in_process_per_request_s": statistics.mean(b - a for a, b in zip([0.0, *here], here)),
    }


def section(details: dict[str, Any]) -> Section:
    if "skipped" in details:
        return Section(
            TITLE, [Row("16 concurrent requests", None, note=f"skipped: {details['skipped']}")], details
        )
    n, tokens = details["requests"], details["new_tokens"]
    note = (
        f"{n} × {tokens} tokens, SmolLM2-135M, threads: {details['threads']} each side, {details['cpus']} "
        "CPUs; baseline: in process, one at a time"
    )
    rows = [
        Row(
            f"{n} concurrent requests: all answered",
            details["engine_total_s"],
            "s",
            baseline=details["in_process_total_s"],
            note=note,
            min_ratio=3,
        ),
        Row(
            f"{n} concurrent requests: p95 latency",
            details["engine_p95_s"],
            "s",
            baseline=details["in_process_p95_s"],
            min_ratio=3,
        ),
        Row(
            "throughput",
            n * tokens / details["engine_total_s"],
            "tokens/s",
            baseline=n * tokens / details["in_process_total_s"],
            better="higher",
            note=f"in process: {details['in_process_per_request_s']:.2f} s per request alone",
        ),
    ]
    return Section(TITLE, rows, details)


def run(quick: bool) -> Section:
    """16 requests of 32 new tokens each (8 with ``quick``)."""
    return section(measure(new_tokens=8 if quick else 32))
