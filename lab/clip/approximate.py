"""Approximate search for big galleries: short codes in memory pick candidates, exact vectors rank them.

Above ``LAB_CLIP_APPROX_ABOVE`` images (:func:`approx_above`, default :data:`APPROX_ABOVE`),
:class:`~lab.clip.index.ImageIndex` stops multiplying each query by every vector. faiss compresses every unit
vector into 4-bit product-quantisation codes (``IndexPQFastScan``: ``d/2`` pieces of 2 dimensions, 16
centroids each, so 128 bytes for CLIP's 512 dimensions, 1/16 of the float32 vector), scans all the codes with
SIMD to pick a few hundred candidates (:data:`RERANK`), and the exact cosine of only those candidates, read
from the vectors, orders the result. The vectors can therefore stay on disk, memory-mapped
(:meth:`ImageIndex.load <lab.clip.index.ImageIndex.load>`): a query reads a few hundred of their rows, RAM
holds the codes.

Why codes and re-ranking rather than a graph or clusters: on 100k random unit vectors of 512 dimensions on
two cores, HNSW (M=32) took ~110 s to build and found 0.51 of the true ten neighbours at ``efSearch=512``
(0.74 at 1024, already half as slow as exact search); IVF's clusters cannot help where the vectors have no
clusters. Codes plus re-ranking of 400 candidates found 0.999 of them, built in ~27 s, and answered ~8×
faster than exact search (``python -m bench big_gallery`` measures it). Real CLIP galleries have far more
structure than random vectors, so they fare at least as well.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lab.errors import LabError

APPROX_ABOVE = 50_000  # exact search (one n × d product) stays in tens of milliseconds up to here
RERANK = 400  # candidates ranked exactly per query (at least 40 per result asked for)
TRAIN_ROWS = 4096  # vectors the codebooks learn from: 16 centroids in 2 dimensions need few
MIN_TRAIN_ROWS = 16 * 39  # faiss wants 39 points per centroid; small galleries are repeated up to this


class FaissMissing(LabError, ImportError):
    """Approximate search was asked for, and ``faiss-cpu`` is not installed."""


def approx_above() -> int:
    """How many images a gallery may hold before search becomes approximate (``LAB_CLIP_APPROX_ABOVE``)."""
    return int(os.environ.get("LAB_CLIP_APPROX_ABOVE", APPROX_ABOVE))


def faiss_installed() -> bool:
    """Whether ``import faiss`` would work, without importing it."""
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise FaissMissing(
            "Approximate search over very large galleries needs faiss: pip install faiss-cpu"
        ) from None
    return faiss


def faiss_index(vectors: np.ndarray) -> Any:
    """4-bit product-quantisation codes of unit vectors, scored by inner product (= cosine); needs faiss.

    The codebooks learn from a sample of :data:`TRAIN_ROWS` vectors; a gallery smaller than faiss wants is
    repeated (the centroids then sit on its points).
    """
    faiss = _faiss()
    count, dim = vectors.shape
    pieces = dim // 2 if dim % 2 == 0 else dim  # 2 dimensions per 4-bit code: close enough to re-rank
    index = faiss.IndexPQFastScan(dim, pieces, 4, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    if count >= TRAIN_ROWS:
        sample = np.sort(rng.choice(count, TRAIN_ROWS, replace=False))
    else:
        sample = np.resize(np.arange(count), max(count, MIN_TRAIN_ROWS))
    threads = faiss.omp_get_max_threads()
    # One k-means per piece, each too small to share: on a busy 2-core machine two threads spent 14× longer
    # waiting on each other than one thread took. Encoding and search below do use every thread.
    faiss.omp_set_num_threads(1)
    try:
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    for start in range(0, count, 65_536):  # in slices: a memory-mapped gallery is read a piece at a time
        index.add(np.ascontiguousarray(vectors[start : start + 65_536], dtype=np.float32))
    return index


def candidates(index: Any, query: np.ndarray, count: int) -> np.ndarray:
    """Rows of the ``count`` codes that score highest against ``query``, in increasing order (no ``-1``)."""
    count = min(count, index.ntotal)
    _, rows = index.search(np.ascontiguousarray(query, dtype=np.float32)[None, :], count)  # (1, count)
    return np.sort(rows[0][rows[0] >= 0])


def write(index: Any, path: Path) -> None:
    """Save the codes to ``path`` (through a partial file, so a reader never sees half of one)."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    _faiss().write_index(index, str(partial))
    os.replace(partial, path)


def read(path: Path) -> Any:
    """Codes saved by :func:`write`, opened with faiss's memory-mapping flag.

    faiss maps what its index type allows; fast-scan codes are small (128 bytes an image at 512 dimensions)
    and land in memory, while the big part, the float vectors, stays memory-mapped by numpy.
    """
    faiss = _faiss()
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
