"""The ``big_gallery`` section: CLIP search past ``LAB_CLIP_APPROX_ABOVE`` images, approximate against exact.

Over 100k random unit vectors of CLIP's 512 dimensions (20k with ``--quick``), one run: the time to build
the faiss codes, the query time of :class:`lab.clip.ImageIndex` searching approximately (codes pick
candidates, exact cosine ranks them) against the same index searching exactly (one matrix product), the
recall@10 of the approximate results against the exact ones, the query time once the index is saved and
loaded back memory-mapped, and the memory an image costs in codes against its float32 vector. Random vectors
are the hard case for approximate search (no clusters, every neighbour nearly as far as the next); real CLIP
galleries do at least as well.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

from bench.report import Row, Section
from bench.timing import median_ms, timed

TITLE = "CLIP search in big galleries"
DIM = 512
K = 10
RECALL_TARGET = 0.95


def unit_vectors(count: int, seed: int) -> np.ndarray:
    """``count`` random unit vectors of :data:`DIM` dimensions."""
    vectors = np.random.default_rng(seed).standard_normal((count, DIM), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall_at(found: list[list[str]], truth: list[list[str]]) -> float:
    """The share of the true ``k`` neighbours that the approximate results hold, averaged over queries."""
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def measure(size: int, queries: int) -> dict[str, Any]:
    """Every figure of the section for one gallery size."""
    from lab import clip

    vectors = unit_vectors(size, seed=0)
    asked = unit_vectors(queries, seed=1)
    ids = [str(i) for i in range(size)]
    exact = clip.ImageIndex(ids, vectors, backend="exact")
    approximate = clip.ImageIndex(ids, vectors, backend="faiss")
    build_s, codes = timed(approximate._faiss)  # what the first approximate query (or save) pays once
    truth = [[i for i, _ in exact.search_vector(q, K)] for q in asked]
    found = [[i for i, _ in approximate.search_vector(q, K)] for q in asked]
    exact_ms = median_ms(lambda: [exact.search_vector(q, K) for q in asked], 1) / queries
    approx_ms = median_ms(lambda: [approximate.search_vector(q, K) for q in asked], 1) / queries
    with tempfile.TemporaryDirectory(prefix="lab-bench-gallery-") as folder:
        approximate.save(folder)
        loaded = clip.ImageIndex.load(folder)
        loaded.search_vector(asked[0], K)  # the first query pages the codes in
        mapped_ms = median_ms(lambda: [loaded.search_vector(q, K) for q in asked], 1) / queries
        mapped_same = all(loaded.search_vector(q, K) == approximate.search_vector(q, K) for q in asked[:10])
    return {
        "gallery_size": size,
        "gallery_queries": queries,
        "gallery_build_s": build_s,
        "gallery_exact_query_ms": exact_ms,
        "gallery_approx_query_ms": approx_ms,
        "gallery_mapped_query_ms": mapped_ms,
        "gallery_mapped_same_results": mapped_same,
        "gallery_speedup": exact_ms / approx_ms,
        "gallery_recall_at_10": recall_at(found, truth),
        "gallery_code_bytes": int(codes.code_size),
        "gallery_vector_bytes": DIM * 4,
    }


def section(details: dict[str, Any]) -> Section:
    """The rows of :func:`measure`'s figures."""
    label = f"{details['gallery_size'] // 1000}k"
    note = f"{label} random unit vectors of {DIM} dims, {details['gallery_queries']} queries, k={K}"
    rows = [
        Row(
            f"search over {label} (approximate, k={K})",
            details["gallery_approx_query_ms"],
            "ms",
            baseline=details["gallery_exact_query_ms"],
            note=f"baseline: exact search (one matrix product); {note}",
        ),
        Row(
            f"recall@{K} of approximate against exact, {label}",
            details["gallery_recall_at_10"],
            better="higher",
            target=RECALL_TARGET,
            note="share of the exact top 10 that the approximate top 10 holds",
        ),
        Row(
            f"building the faiss codes, {label}",
            details["gallery_build_s"],
            "s",
            note="once per gallery; saved beside its embeddings",
        ),
        Row(
            f"search over {label} after save → memory-mapped load",
            details["gallery_mapped_query_ms"],
            "ms",
            baseline=details["gallery_exact_query_ms"],
            note="same results as before saving"
            if details["gallery_mapped_same_results"]
            else "DIFFERENT results after loading",
        ),
        Row(
            "memory per image: faiss codes (vectors stay on disk)",
            details["gallery_code_bytes"],
            "B",
            baseline=details["gallery_vector_bytes"],
            note="baseline: its float32 vector in memory",
        ),
    ]
    return Section(TITLE, rows, details)


def run(quick: bool) -> Section:
    """100k vectors and 100 queries (20k and 20 with ``quick``)."""
    return section(measure(20_000, 20) if quick else measure(100_000, 100))
