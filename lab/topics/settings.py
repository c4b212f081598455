"""What :func:`lab.topics.fit` takes: the book's pipeline settings, their defaults and their checks.

::

    settings = TopicSettings(hdbscan_params={"min_cluster_size": 40}, stop_words=True)
    run = topics.fit(docs, settings, embeddings=vectors)
    run = topics.fit(docs, embeddings=vectors, hdbscan_params={"min_cluster_size": 40})  # the same
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lab import catalog, validate
from lab.errors import InputError
from lab.topics.errors import TopicInputError

MINILM = catalog.MINILM
GTE_SMALL = catalog.GTE_SMALL
EMBEDDING_MODELS = [MINILM, GTE_SMALL, "sentence-transformers/all-mpnet-base-v2"]
FLAN_T5 = "google/flan-t5-small"  # the book's topic labeller (in the catalog, without a constant there)
SMOLLM2 = catalog.SMOLLM2
GENERATORS = [FLAN_T5, SMOLLM2]

# The book's pipeline (chapter 5).
UMAP_DEFAULTS: dict[str, Any] = {"n_neighbors": 15, "n_components": 5, "min_dist": 0.0, "metric": "cosine"}
HDBSCAN_DEFAULTS: dict[str, Any] = {
    "min_cluster_size": 50,
    "min_samples": None,
    "metric": "euclidean",
    "cluster_selection_method": "eom",
}
MIN_DOCS = 10
OUTLIER_STRATEGIES = ("c-tf-idf", "embeddings", "distributions")
REDUCTIONS = ("umap", "pca")
CLUSTERINGS = ("hdbscan", "kmeans")
SELECTIONS = ("eom", "leaf")  # HDBSCAN's cluster_selection_method

Progress = Callable[[float, str], Any]


@dataclass
class TopicSettings:
    """How :func:`lab.topics.fit` models documents; the defaults are the book's pipeline.

    Attributes:
        embedding_model: the sentence-transformers id that embeds documents and queries (MiniLM default).
        umap_params: override :data:`UMAP_DEFAULTS` (``n_neighbors``, ``n_components``, ``min_dist``…).
        hdbscan_params: override :data:`HDBSCAN_DEFAULTS` (``min_cluster_size``, ``min_samples``…).
        seed: UMAP's and k-means' ``random_state``.
        nr_topics: merge topics down to this many (BERTopic's ``nr_topics``; ``"auto"`` lets HDBSCAN decide).
        outliers: reassign outliers to topics with BERTopic's ``reduce_outliers`` strategy
            (``"c-tf-idf"``, ``"embeddings"`` or ``"distributions"``), or None to keep them.
        reduction, clustering: ``"pca"`` and ``"kmeans"`` swap in fast stand-ins (as BERTopic's tests do);
            k-means makes ``n_clusters`` topics and has no outliers.
        stop_words: drop English stop words from the topic words (the book keeps them).
    """

    embedding_model: str | None = None
    umap_params: dict[str, Any] = field(default_factory=dict)
    hdbscan_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 42
    nr_topics: int | str | None = None
    outliers: str | None = None
    reduction: Literal["umap", "pca"] = "umap"
    clustering: Literal["hdbscan", "kmeans"] = "hdbscan"
    n_clusters: int = 20
    stop_words: bool = False

    def __post_init__(self) -> None:
        # Copies: a caller's dict is never changed, and None means "the defaults", as fit always took it.
        self.umap_params = dict(self.umap_params or {})
        self.hdbscan_params = dict(self.hdbscan_params or {})

    @property
    def model_id(self) -> str:
        """The embedding model used: ``embedding_model``, or MiniLM."""
        return self.embedding_model or MINILM

    @property
    def umap(self) -> dict[str, Any]:
        """UMAP's parameters: the book's, with ``umap_params`` over them."""
        return {**UMAP_DEFAULTS, **self.umap_params}

    @property
    def hdbscan(self) -> dict[str, Any]:
        """HDBSCAN's parameters: the book's, with ``hdbscan_params`` over them."""
        return {**HDBSCAN_DEFAULTS, **self.hdbscan_params}

    def key(self) -> tuple:
        """The settings as a hashable key: equal for settings that fit the same (defaults included)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(umap_params=self.umap, hdbscan_params=self.hdbscan)
        return tuple((name, frozen_params(v) if isinstance(v, dict) else v) for name, v in values.items())

    def for_documents(self, n: int) -> tuple[TopicSettings, list[str]]:
        """These settings checked against ``n`` documents, and notes on what had to change.

        UMAP's ``n_neighbors`` is lowered below ``n`` where it must be (with a note); every other
        impossible choice is refused.

        Raises:
            TopicInputError: too few documents for the settings, or settings out of range.
        """
        if n < MIN_DOCS:
            raise TopicInputError(f"{n} documents: topic modelling needs at least {MIN_DOCS}.")
        if self.reduction not in REDUCTIONS:
            raise TopicInputError(f"Unknown reduction {self.reduction!r}: use 'umap' or 'pca'.")
        if self.clustering not in CLUSTERINGS:
            raise TopicInputError(f"Unknown clustering {self.clustering!r}: use 'hdbscan' or 'kmeans'.")
        if self.outliers is not None and self.outliers not in OUTLIER_STRATEGIES:
            raise TopicInputError(
                f"Unknown outlier strategy {self.outliers!r}: use one of {OUTLIER_STRATEGIES}."
            )
        if self.clustering == "hdbscan":
            _check_hdbscan(self.hdbscan, n)
        elif not 1 <= self.n_clusters <= n:
            raise TopicInputError(f"k-means cannot make {self.n_clusters} topics from {n} documents.")
        umap = self.umap
        neighbours = umap["n_neighbors"]
        if not isinstance(neighbours, int) or neighbours < 2:
            raise TopicInputError("n_neighbors must be a whole number of at least 2.")
        notes = []
        if neighbours >= n:
            umap["n_neighbors"] = n - 1
            notes.append(f"n_neighbors lowered to {n - 1}: it must be smaller than the number of documents.")
        return dataclasses.replace(self, umap_params=umap), notes

    def params(self) -> dict[str, Any]:
        """The settings as a run reports them (:attr:`lab.topics.TopicRun.params`)."""
        return {
            "embedding_model": self.model_id,
            "umap": self.umap,
            "hdbscan": self.hdbscan,
            "reduction": self.reduction,
            "clustering": self.clustering,
            "n_clusters": self.n_clusters if self.clustering == "kmeans" else None,
            "nr_topics": self.nr_topics,
            "outliers": self.outliers,
            "stop_words": self.stop_words,
            "seed": self.seed,
        }

    @classmethod
    def from_form(cls, values: Mapping[str, Any]) -> TopicSettings:
        """Settings from plain form values, as the tab's widgets and the web API give them.

        Keys (all optional): ``embedding_model``, ``n_neighbors``, ``clustering``, ``min_cluster_size``,
        ``min_samples``, ``cluster_selection_method``, ``n_clusters``, ``nr_topics``, ``outliers``,
        ``stop_words``. Numbers may come as floats (sliders); a 0 or empty ``min_samples`` or ``nr_topics``
        means "not set", and the outlier choice ``"keep"`` means none are reassigned.
        """
        umap, hdbscan = {}, {}
        if values.get("n_neighbors") is not None:
            umap["n_neighbors"] = _bounded("n_neighbors", values["n_neighbors"])
        if values.get("min_cluster_size") is not None:
            hdbscan["min_cluster_size"] = _bounded("min_cluster_size", values["min_cluster_size"])
        if "min_samples" in values:
            hdbscan["min_samples"] = _bounded("min_samples", values["min_samples"]) or None
        if values.get("cluster_selection_method"):
            hdbscan["cluster_selection_method"] = values["cluster_selection_method"]
        outliers = values.get("outliers") or None
        embedding_model = values.get("embedding_model") or None
        if embedding_model is not None:
            embedding_model = validate.model_id(embedding_model, "embedding_model")
        return cls(
            embedding_model=embedding_model,
            umap_params=umap,
            hdbscan_params=hdbscan,
            nr_topics=_bounded("nr_topics", values.get("nr_topics")) or None,
            outliers=None if outliers == "keep" else outliers,
            clustering=values.get("clustering") or "hdbscan",
            n_clusters=_bounded("n_clusters", values.get("n_clusters", 20)),
            stop_words=_flag(values.get("stop_words", False)),
        )


def _check_hdbscan(params: dict[str, Any], n: int) -> None:
    size = params.get("min_cluster_size")
    if not isinstance(size, int) or size < 2:
        raise TopicInputError("min_cluster_size must be a whole number of at least 2.")
    if n < size:
        suggestion = max(2, min(size - 1, n // 5))
        raise TopicInputError(
            f"Only {n:,} documents, fewer than min_cluster_size={size}: HDBSCAN cannot form a single "
            f"topic. Set min_cluster_size to {suggestion} or less, or choose k-means clustering, which "
            "makes the number of topics you ask for."
        )
    if params.get("cluster_selection_method") not in SELECTIONS:
        raise TopicInputError(
            f"Unknown cluster_selection_method {params.get('cluster_selection_method')!r}: use 'eom' "
            "(excess of mass, the book's) or 'leaf' (the finest clusters)."
        )
    samples = params.get("min_samples")
    if samples is not None and (not isinstance(samples, int) or not 1 <= samples <= n):
        raise TopicInputError(f"min_samples must be between 1 and the number of documents ({n:,}).")


def frozen_params(params: dict[str, Any]) -> tuple:
    """A dict of parameters as a hashable, order-free key."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _bounded(name: str, value: Any) -> Any:
    """A form or API value within the slider's bounds (lab.validate.BOUNDS); "" is "not set"."""
    try:
        return validate.bound(name, None if value == "" else value)
    except InputError as error:
        raise TopicInputError(str(error)) from None


def _flag(value: Any) -> bool:
    try:
        return validate.flag(value, "stop_words")
    except InputError as error:
        raise TopicInputError(str(error)) from None
