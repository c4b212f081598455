"""The ``batching`` section: 16 students asking at once, batched across students against one at a time.

Sixteen threads (sixteen students) send one request each at the same moment through a
:class:`lab.scheduler.Scheduler`, by the code path the app's batched events use: the *prepare* step in the
student's thread, :meth:`~lab.scheduler.Scheduler.run_batched` with the feature's batched forward step, the
*present* step back in the student's thread. The baseline is the same code through ``Scheduler(max_batch=1)``:
one forward pass per request, turns still going round the students. Features:

- the next-token distribution (SmolLM2-135M, prompts of 5–20 tokens, top 10 after temperature);
- sentence similarity (MiniLM, six sentences per student, the 6×6 cosine matrix);
- a CLIP text query (ViT-B-32's text tower, real or random weights, scored against 1,000 image vectors);
- a BLIP-2 caption of a book image (the tiny random BLIP-2: the batched ``generate`` loop, not BLIP-2's
  arithmetic, which no offline weights allow here).

Reported per feature: the time until all 16 are answered, the 95th percentile of the students' waits, and
the throughput ratio (target ≥ 3×). The first request finds the model free and runs alone; the other 15
wait for it and run as one batch, as they would in the app. Each side runs ``rounds`` times, alternated,
and the median round is reported (the machine is shared).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import ROOT
from bench.report import Row, Section

TITLE = "Batching across students (16 at once)"
STUDENTS = 16
MIN_RATIO = 3.0

SUBJECTS = [
    "The capital of France",
    "My favourite food",
    "The best way to learn",
    "A good teacher",
    "Machine learning",
    "The river bank",
    "Every morning I",
    "The old castle on the hill",
]
ENDINGS = ["is", "has always been", "can be described as", "reminds me of"]
QUERIES = [
    "a cat",
    "a photo of a dog",
    "a rocket launch",
    "a cup of coffee",
    "the moon at night",
    "a red motorcycle",
    "coins on a table",
    "an astronaut in space",
]


@dataclass(frozen=True)
class Feature:
    """One feature as the app runs it: ``prepare(n)`` for student ``n`` (in their thread), the batched
    forward step, ``present`` (in their thread again)."""

    name: str
    kind: str
    prepare: Callable[[int], Any]
    forward_many: Callable[[list[Any]], list[Any]]
    present: Callable[[Any], Any]
    note: str


def next_token_feature() -> Feature:
    from lab import attention

    def prepare(n: int) -> Any:
        prompt = f"{SUBJECTS[n % len(SUBJECTS)]} {ENDINGS[n % len(ENDINGS)]}"
        return attention.prepare_prompt(prompt, attention.DECODER)

    def present(logits: np.ndarray) -> Any:
        return attention.distribution(logits, attention.DECODER, k=10, temperature=0.8, top_p=0.9)

    return Feature(
        "next token", "next_token", prepare, attention.next_token_logits_batch, present, "SmolLM2-135M"
    )


def similarity_feature() -> Feature:
    from lab import embeddings

    def prepare(n: int) -> Any:
        # each student's own sentences
        texts = [f"{sentence} ({n})" for sentence in embeddings.EXAMPLE_SENTENCES]
        return embeddings.prepare_texts(texts, embeddings.SENTENCE_MODEL, minimum=2)

    return Feature(
        "similarity",
        "similarity",
        prepare,
        embeddings.embed_batch,
        embeddings.cosine,
        "MiniLM-L6, 6 sentences per student",
    )


def clip_text_feature() -> Feature:
    from bench.clip import bench_model
    from lab import clip

    model, which = bench_model()
    gallery = np.random.default_rng(0).standard_normal((1000, model.embed_dim)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)

    def prepare(n: int) -> Any:
        return clip.TextQuery.prepare(f"{QUERIES[n % len(QUERIES)]} ({n})", model)

    def present(vector: np.ndarray) -> Any:
        scores = gallery @ vector  # (1000,)
        return np.argsort(-scores)[:8]

    return Feature("CLIP text query", "clip_text", prepare, clip.embed_queries, present, which)


def caption_feature(folder: Path) -> Feature:
    """BLIP-2 captions by the tiny random model of :func:`lab.testing.write_blip2` (no BLIP-2 weights
    install offline): the lab's batched generate loop, not BLIP-2's arithmetic."""
    from lab import testing, vision_chat

    model = testing.write_blip2(folder / "tiny-blip2")
    images = [ROOT / "assets" / "book" / "images" / name for name in ("car.png", "cat.png", "puppy.png")]

    def prepare(n: int) -> Any:
        return vision_chat.CaptionRequest.prepare(images[n % len(images)], "bench/tiny-random-blip2", model)

    def present(caption: Any) -> Any:
        return caption.text

    note = "tiny random BLIP-2, 20 tokens"
    return Feature("BLIP-2 caption", "caption", prepare, vision_chat.caption_batch, present, note)


def one_round(feature: Feature, max_batch: int) -> tuple[float, list[float], list[int]]:
    """16 students at once through a fresh ``Scheduler(max_batch=...)``: (seconds until all answered,
    each student's seconds, the batch sizes formed)."""
    from lab.scheduler import Scheduler

    scheduler = Scheduler(max_batch=max_batch)
    start = threading.Barrier(STUDENTS + 1)
    waits: list[float] = [0.0] * STUDENTS
    errors: list[BaseException] = []

    def student(n: int) -> None:
        start.wait()
        began = time.perf_counter()
        try:
            item = feature.prepare(n)
            result = scheduler.run_batched(
                f"student-{n}", feature.kind, key=item.batch_key, item=item, batch_fn=feature.forward_many
            )
            feature.present(result)
        except BaseException as error:  # reported below: a bench that hides failures measures nothing
            errors.append(error)
        waits[n] = time.perf_counter() - began

    threads = [threading.Thread(target=student, args=(n,)) for n in range(STUDENTS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    total = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{feature.name}: {len(errors)} requests failed: {errors[0]!r}") from errors[0]
    return total, waits, scheduler.batch_sizes()


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def measure(feature: Feature, rounds: int) -> dict[str, Any]:
    """Both sides ``rounds`` times, alternated after a warm-up of each; the median round of each side."""
    one_round(feature, STUDENTS)  # warm-up: the model loads, the first passes allocate
    one_round(feature, 1)
    runs: dict[str, list[tuple[float, list[float], list[int]]]] = {"batched": [], "single": []}
    for _ in range(rounds):
        runs["batched"].append(one_round(feature, STUDENTS))
        runs["single"].append(one_round(feature, 1))
    summary = {}
    for side, results in runs.items():
        totals = [total for total, _, _ in results]
        median = sorted(results, key=lambda r: r[0])[len(results) // 2]
        summary[side] = {
            "total_s": statistics.median(totals),
            "p95_s": p95(median[1]),
            "batches": median[2],
            "totals_s": totals,
        }
    return summary


def rows_of(feature: Feature, summary: dict[str, Any]) -> list[Row]:
    batched, single = summary["batched"], summary["single"]
    note = f"{feature.note}; batches {batched['batches']}"
    return [
        Row(f"{feature.name}: all 16 answered", batched["total_s"], "s", single["total_s"], note),
        Row(f"{feature.name}: p95 wait", batched["p95_s"], "s", single["p95_s"]),
        Row(
            f"{feature.name}: throughput",
            STUDENTS / batched["total_s"],
            "req/s",
            STUDENTS / single["total_s"],
            "baseline: Scheduler(max_batch=1)",
            better="higher",
            min_ratio=MIN_RATIO,
        ),
    ]


def run(quick: bool) -> Section:
    """Each feature 3 rounds a side (1 with ``quick``), after a warm-up round of each."""
    rounds = 1 if quick else 3
    rows: list[Row] = []
    details: dict[str, Any] = {"students": STUDENTS, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as scratch:
        makers = (next_token_feature, similarity_feature, clip_text_feature)
        for feature in (*(make() for make in makers), caption_feature(Path(scratch))):
            summary = measure(feature, rounds)
            details[feature.name] = summary
            rows.extend(rows_of(feature, summary))
    return Section(TITLE, rows, details)
