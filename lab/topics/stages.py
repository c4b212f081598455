"""The pipeline's middle stages, each computed once for its inputs: reduction (UMAP) and clustering.

Results are kept in memory by a fingerprint of their input and their parameters, so changing an HDBSCAN
parameter re-runs only the clustering (and c-TF-IDF). :data:`STAGE_RUNS` counts the stages actually
computed in this process (cache hits are not counted), for tests and the bench. The two ``Precomputed``
adapters hand the cached results to BERTopic in place of its own UMAP and HDBSCAN.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lab.topics.errors import TopicInputError
from lab.topics.settings import Progress, frozen_params

STAGE_RUNS: Counter[str] = Counter()


class Memo:
    """A small thread-safe LRU of computed results, keyed by their inputs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> Any | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: tuple, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()

    def __len__(self) -> int:
        with self.lock:
            return len(self.items)


_REDUCED = Memo(6)
_CLUSTERS = Memo(12)


def clear_caches() -> None:
    """Forget the in-memory UMAP and clustering results (embeddings stay on disk)."""
    _REDUCED.clear()
    _CLUSTERS.clear()


def _fingerprint(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


# -- reduction -------------------------------------------------------------------------------------------


@dataclass
class Reduced:
    """Embeddings reduced for clustering (``n_components``-d), and their 2-d layout for maps, computed
    only when a map first asks for it (:meth:`layout`): a fit needs no more than BERTopic's own."""

    clustering: np.ndarray  # (n, n_components)
    estimator: Any  # the fitted reducer, for new documents
    seconds: dict[str, float]
    source: np.ndarray = field(repr=False)  # (n, dim) the embeddings reduced
    params: dict[str, Any] = field(default_factory=dict)
    method: str = "umap"
    seed: int = 42
    _plot: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def layout_ready(self) -> bool:
        """Whether the 2-d layout has been computed (it is kept once it has)."""
        return self._plot is not None

    @property
    def plot(self) -> np.ndarray:
        """The 2-d layout ``(n, 2)``, computed on first use (:meth:`layout`)."""
        return self.layout()[0]

    def layout(self, progress: Progress | None = None) -> tuple[np.ndarray, bool]:
        """The 2-d layout for maps, and whether it was computed before this call.

        UMAP lays the documents out in 2-d from the neighbours the clustering run found (only the layout is
        optimised again); PCA keeps its first two components. Computed once, whoever asks first (several
        sessions may share this result: the others wait for it)."""
        with self._lock:
            if self._plot is not None:
                return self._plot, True
            say = progress or (lambda fraction, text: None)
            started = time.perf_counter()
            STAGE_RUNS["umap_2d"] += 1
            if self.method == "pca":
                low = self.clustering
                plot = low[:, :2] if low.shape[1] >= 2 else np.pad(low, ((0, 0), (0, 2 - low.shape[1])))
            else:
                say(0.0, f"UMAP: laying out {len(self.source):,} documents in 2-d for the maps (once)")
                plot = _umap_layout(self.source, self.params, self.seed, self.estimator)
            self._plot = np.asarray(plot, np.float32)  # (n, 2)
            self.seconds["umap_2d"] = time.perf_counter() - started
            return self._plot, False


def reduce(
    embeddings: np.ndarray,
    params: dict[str, Any],
    *,
    method: Literal["umap", "pca"] = "umap",
    seed: int = 42,
    progress: Progress | None = None,
) -> tuple[Reduced, bool]:
    """Reduce embeddings to ``n_components`` dimensions for clustering (the 2-d layout for plots follows
    when asked for: :meth:`Reduced.layout`).

    UMAP runs with the book's parameters (``params`` overrides them); ``method="pca"`` swaps in PCA (fast,
    for tests and small experiments). Returns the result and whether it was cached.
    """
    if method not in ("umap", "pca"):
        raise TopicInputError(f"Unknown reduction {method!r}: use 'umap' or 'pca'.")
    key = (_fingerprint(embeddings), method, frozen_params(params), seed)
    hit = _REDUCED.get(key)
    if hit is not None:
        return hit, True
    reducer = _pca if method == "pca" else _umap
    low, estimator, seconds = reducer(embeddings, params, seed, progress or (lambda fraction, text: None))
    result = Reduced(
        np.asarray(low, np.float32), estimator, {"umap": seconds}, embeddings, dict(params), method, seed
    )
    _REDUCED.put(key, result)
    return result, False


def _pca(embeddings: np.ndarray, params: dict[str, Any], seed: int, say: Progress) -> tuple[Any, Any, float]:
    from sklearn.decomposition import PCA

    started = time.perf_counter()
    STAGE_RUNS["umap"] += 1
    estimator = PCA(n_components=params["n_components"], random_state=seed).fit(embeddings)
    low = estimator.transform(embeddings)  # (n, n_components)
    return low, estimator, time.perf_counter() - started


def _umap(embeddings: np.ndarray, params: dict[str, Any], seed: int, say: Progress) -> tuple[Any, Any, float]:
    from umap import UMAP

    say(0.0, f"UMAP to {params['n_components']} dimensions for clustering (the first run compiles)")
    started = time.perf_counter()
    STAGE_RUNS["umap"] += 1
    estimator = UMAP(**params, random_state=seed)
    low = estimator.fit_transform(embeddings)  # (n, n_components)
    return low, estimator, time.perf_counter() - started


def _umap_layout(embeddings: np.ndarray, params: dict[str, Any], seed: int, fitted: Any) -> np.ndarray:
    """UMAP to 2-d with the clustering run's parameters, reusing its nearest neighbours where it has them."""
    from umap import UMAP

    plot_params = {**params, "n_components": 2}
    knn = getattr(fitted, "_knn_indices", None)
    if knn is not None and embeddings.shape[0] >= 4096:  # below 4096 UMAP computes exact distances, no graph
        # Same neighbours, same graph: only the 2-d layout is optimised again (UMAP modifies them in place).
        # Private attributes of umap-learn 0.5's UMAP: its documented precomputed_knn takes exactly these.
        plot_params["precomputed_knn"] = (
            fitted._knn_indices.copy(),
            fitted._knn_dists.copy(),
            fitted._knn_search_index,
        )
    return UMAP(**plot_params, random_state=seed).fit_transform(embeddings)  # (n, 2)


# -- clustering -------------------------------------------------------------------------------------------


@dataclass
class Clusters:
    """Cluster labels of the reduced embeddings and the fitted clusterer."""

    labels: np.ndarray  # (n,), -1 for outliers
    probabilities: np.ndarray | None
    estimator: Any
    seconds: float


def cluster(
    reduced: np.ndarray,
    params: dict[str, Any],
    *,
    method: Literal["hdbscan", "kmeans"] = "hdbscan",
    n_clusters: int = 20,
    seed: int = 42,
) -> tuple[Clusters, bool]:
    """Cluster reduced embeddings: HDBSCAN with the book's parameters, or k-means into ``n_clusters``.

    Returns the clusters and whether they were cached.
    """
    if method not in ("hdbscan", "kmeans"):
        raise TopicInputError(f"Unknown clustering {method!r}: use 'hdbscan' or 'kmeans'.")
    key = (_fingerprint(reduced), method, frozen_params(params) if method == "hdbscan" else n_clusters, seed)
    hit = _CLUSTERS.get(key)
    if hit is not None:
        return hit, True
    started = time.perf_counter()
    STAGE_RUNS["clustering"] += 1
    if method == "kmeans":
        from sklearn.cluster import KMeans

        estimator = KMeans(n_clusters=n_clusters, random_state=seed, n_init="auto").fit(reduced)
        result = Clusters(estimator.labels_.astype(int), None, estimator, 0.0)
    else:
        from hdbscan import HDBSCAN

        estimator = HDBSCAN(**params, prediction_data=True).fit(reduced)
        result = Clusters(estimator.labels_.astype(int), estimator.probabilities_, estimator, 0.0)
    result.seconds = time.perf_counter() - started
    _CLUSTERS.put(key, result)
    return result, False


# -- adapters: BERTopic takes the cached stages as its UMAP and HDBSCAN ------------------------------------


class PrecomputedReduction:
    """Hands BERTopic reduced embeddings computed (and cached) beforehand; new documents go through the
    fitted reducer. (BERTopic calls only ``fit`` and ``transform``, as on its own UMAP.)"""

    def __init__(self, source: np.ndarray, reduced: np.ndarray, estimator: Any) -> None:
        self.source, self.reduced, self.estimator = source, reduced, estimator

    def fit(self, X: np.ndarray, y: Any = None) -> PrecomputedReduction:
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if X is self.source or (X.shape == self.source.shape and np.array_equal(X, self.source)):
            return self.reduced
        return self.estimator.transform(X)

    def __repr__(self) -> str:
        return f"precomputed({self.estimator!r})"


class PrecomputedClusters:
    """Hands BERTopic cluster labels computed (and cached) beforehand; new points go to the fitted model.
    (BERTopic reads ``labels_`` and ``probabilities_`` after ``fit``, as on its own HDBSCAN.)"""

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self.estimator = clusters.estimator

    def fit(self, X: np.ndarray, y: Any = None) -> PrecomputedClusters:
        self.labels_ = self.clusters.labels.copy()
        if self.clusters.probabilities is not None:
            self.probabilities_ = self.clusters.probabilities
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if hasattr(self.estimator, "predict"):
            return self.estimator.predict(X)
        import hdbscan

        return hdbscan.approximate_predict(self.estimator, X)[0]

    def __repr__(self) -> str:
        return f"precomputed({self.estimator!r})"
