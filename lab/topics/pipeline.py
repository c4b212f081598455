"""The whole pipeline: embed → UMAP → HDBSCAN → c-TF-IDF (→ outlier reduction), with BERTopic.

:func:`fit` is BERTopic with the book's defaults, but each stage is computed once for its inputs:
embeddings are kept on disk by model and corpus hash, UMAP and clustering in memory by their parameters
(:mod:`lab.topics.stages`), so changing an HDBSCAN parameter re-runs only the clustering and c-TF-IDF.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lab.topics.corpora import Corpus
from lab.topics.embedding import embed_documents, lab_embedder
from lab.topics.errors import TopicInputError
from lab.topics.results import TopicRun
from lab.topics.settings import Progress, TopicSettings
from lab.topics.stages import (
    STAGE_RUNS,
    Clusters,
    PrecomputedClusters,
    PrecomputedReduction,
    Reduced,
    cluster,
    reduce,
)


@dataclass
class _Log:
    """What a fit reports as it goes: progress, seconds and cache hits per stage, notes for people."""

    say: Progress
    timings: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, stage: str, seconds: float, cached: bool) -> None:
        self.timings[stage], self.cached[stage] = (0.0 if cached else seconds), cached


def fit(
    docs: Sequence[str],
    settings: TopicSettings | None = None,
    *,
    titles: Sequence[str] | None = None,
    embeddings: np.ndarray | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> TopicRun:
    """Fit BERTopic on ``docs`` with the book's pipeline, reusing every stage already computed.

    Args:
        settings: how to model (:class:`TopicSettings`; the book's pipeline by default).
        titles: short names of the documents, for maps and tables.
        embeddings: precomputed document embeddings ``(n, dim)``, by the settings' ``embedding_model``.
        progress: called with (fraction, description) as stages start.
        **options: any field of :class:`TopicSettings` (``umap_params``, ``hdbscan_params``, ``seed``,
            ``nr_topics``, ``outliers``, ``reduction``, ``clustering``, ``n_clusters``, ``stop_words``,
            ``embedding_model``), over ``settings``.

    Raises:
        TopicInputError: too few documents for the settings, or settings out of range.
    """
    total = time.perf_counter()
    from bertopic import BERTopic  # noqa: F401 (the first import loads numba, UMAP and HDBSCAN: seconds)

    imported = time.perf_counter() - total
    settings = dataclasses.replace(settings or TopicSettings(), **options)
    docs = list(docs)
    _check_documents(docs, titles)
    settings, notes = settings.for_documents(len(docs))
    log = _Log(progress or (lambda fraction, text: None), notes=notes)
    if imported > 0.05:
        log.record("import", imported, False)

    vectors = _embed(docs, embeddings, settings, log)
    if settings.umap["n_components"] >= vectors.shape[1]:
        raise TopicInputError(f"n_components must be below the embedding size ({vectors.shape[1]}).")
    reduced = _reduce(vectors, settings, log)
    clusters = _cluster(reduced, settings, log)
    model = _describe(docs, vectors, reduced, clusters, settings, log)
    if settings.outliers and -1 in model.topics_:
        _reduce_outliers(model, docs, vectors, settings, log)
    topic_ids = [int(t) for t in model.topics_]
    log.notes += _topic_count_notes(topic_ids, settings)
    log.timings["total"] = time.perf_counter() - total
    return TopicRun(
        topics=topic_ids,
        info=model.get_topic_info(),
        model=model,
        reduction=reduced,
        timings=log.timings,
        cached=log.cached,
        docs=docs,
        titles=list(titles) if titles is not None else None,
        embeddings=vectors,
        reduced=reduced.clustering,
        params=settings.params(),
        notes=log.notes,
    )


def fit_corpus(corpus: Corpus, settings: TopicSettings, *, progress: Progress | None = None) -> TopicRun:
    """Fit a :class:`Corpus`: its titles, its own embedding model unless ``settings`` names another, and
    its precomputed embeddings when they are that model's."""
    settings = dataclasses.replace(
        settings, embedding_model=settings.embedding_model or corpus.embedding_model
    )
    precomputed = shipped_embeddings(corpus, settings)
    return fit(corpus.docs, settings, titles=corpus.titles, embeddings=precomputed, progress=progress)


def shipped_embeddings(corpus: Corpus, settings: TopicSettings) -> np.ndarray | None:
    """The embeddings that came with ``corpus``, when they are those of the model ``settings`` embed with
    (the corpus's own when they name none); else None, and :func:`fit` embeds the documents itself."""
    model_id = settings.embedding_model or corpus.embedding_model
    return corpus.embeddings if model_id == corpus.embedding_model else None


def _check_documents(docs: list[str], titles: Sequence[str] | None) -> None:
    if any(not isinstance(d, str) or not d.strip() for d in docs):
        raise TopicInputError("Some documents are empty: clean them first (lab.topics.clean_documents).")
    if len(set(docs)) != len(docs):
        raise TopicInputError("Some documents are duplicates: clean them first (lab.topics.clean_documents).")
    if titles is not None and len(titles) != len(docs):
        raise TopicInputError(f"{len(titles):,} titles for {len(docs):,} documents.")


# -- the stages, in order ----------------------------------------------------------------------------------


def _embed(docs: list[str], given: np.ndarray | None, settings: TopicSettings, log: _Log) -> np.ndarray:
    """1. The documents' embeddings: as given, or computed (and kept on disk)."""
    n, model_id = len(docs), settings.model_id
    if given is not None:
        vectors = np.asarray(given, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise TopicInputError(f"embeddings have shape {vectors.shape}; expected ({n}, dim).")
        log.record("embeddings", 0.0, True)
        return vectors
    log.say(0.0, f"Embedding {n:,} documents with {model_id}")
    embedded = embed_documents(docs, model_id, progress=lambda f, t: log.say(0.3 * f, t))
    log.record("embeddings", embedded.seconds, embedded.cached)
    if embedded.truncated:
        log.notes.append(
            f"{embedded.truncated:,} of {n:,} documents are longer than {model_id}'s "
            f"{embedded.max_tokens} word pieces: it embedded their beginning only."
        )
    return embedded.vectors


def _reduce(vectors: np.ndarray, settings: TopicSettings, log: _Log) -> Reduced:
    """2. UMAP: 5-d for clustering (the 2-d layout for maps waits until a map asks for it)."""
    log.say(0.3, "UMAP: reducing the embeddings")
    reduced, hit = reduce(
        vectors,
        settings.umap,
        method=settings.reduction,
        seed=settings.seed,
        progress=lambda f, t: log.say(0.3 + 0.4 * f, t),
    )
    log.record("umap", reduced.seconds["umap"], hit)
    if reduced.layout_ready:  # an earlier run's map laid these out already
        log.record("umap_2d", 0.0, True)
    return reduced


def _cluster(reduced: Reduced, settings: TopicSettings, log: _Log) -> Clusters:
    """3. HDBSCAN (or k-means) on the 5-d embeddings."""
    log.say(0.7, "HDBSCAN: clustering" if settings.clustering == "hdbscan" else "k-means: clustering")
    clusters, hit = cluster(
        reduced.clustering,
        settings.hdbscan,
        method=settings.clustering,
        n_clusters=settings.n_clusters,
        seed=settings.seed,
    )
    log.record("clustering", clusters.seconds, hit)
    if not set(clusters.labels.tolist()) - {-1}:
        raise TopicInputError(
            f"HDBSCAN marked all {len(clusters.labels):,} documents as outliers: no group of "
            f"{settings.hdbscan['min_cluster_size']} similar documents was dense enough. Lower "
            "min_cluster_size (or min_samples), or choose k-means."
        )
    return clusters


def _describe(
    docs: list[str],
    vectors: np.ndarray,
    reduced: Reduced,
    clusters: Clusters,
    settings: TopicSettings,
    log: _Log,
) -> Any:
    """4. c-TF-IDF: BERTopic itself, fitted on the stages above."""
    from bertopic import BERTopic

    log.say(0.8, "c-TF-IDF: topic words")
    started = time.perf_counter()
    STAGE_RUNS["ctfidf"] += 1
    model = BERTopic(
        embedding_model=lab_embedder(settings.model_id),
        umap_model=PrecomputedReduction(vectors, reduced.clustering, reduced.estimator),
        hdbscan_model=PrecomputedClusters(clusters),
        vectorizer_model=_vectorizer(settings.stop_words),
        nr_topics=settings.nr_topics,
        verbose=False,
    )
    model.fit(docs, embeddings=vectors)
    log.record("ctfidf", time.perf_counter() - started, False)
    return model


def _reduce_outliers(model: Any, docs: list[str], vectors: np.ndarray, settings: TopicSettings, log: _Log):
    """5. Optional: outliers reassigned to topics (BERTopic's ``reduce_outliers``), topics described again."""
    strategy = settings.outliers
    log.say(0.9, f"Reducing outliers ({strategy})")
    started = time.perf_counter()
    STAGE_RUNS["outliers"] += 1
    before = sum(t == -1 for t in model.topics_)
    new_topics = model.reduce_outliers(
        docs, model.topics_, strategy=strategy, embeddings=vectors if strategy == "embeddings" else None
    )
    model.update_topics(docs, topics=new_topics, vectorizer_model=_vectorizer(settings.stop_words))
    # update_topics would build topic vectors from c-TF-IDF words; the centroids of the documents'
    # embeddings are what find_topics should compare a query with. (A private method of BERTopic 0.17.)
    frame = pd.DataFrame({"Document": docs, "Topic": new_topics, "ID": range(len(docs)), "Image": None})
    model._create_topic_vectors(documents=frame, embeddings=vectors)
    after = sum(t == -1 for t in new_topics)
    log.notes.append(
        f"Outlier reduction ({strategy}) moved {before - after:,} of {before:,} outliers into topics."
    )
    log.record("outliers", time.perf_counter() - started, False)


def _topic_count_notes(topic_ids: list[int], settings: TopicSettings) -> list[str]:
    found = len(set(topic_ids) - {-1})
    notes = []
    if found == 1:
        notes.append(
            "A single topic was found: lower min_cluster_size (or min_samples) to split it, or choose "
            "k-means. The heatmap and hierarchy need at least two topics."
        )
    if settings.nr_topics not in (None, "auto") and found > int(settings.nr_topics):
        notes.append(f"nr_topics={settings.nr_topics} could not be reached exactly.")
    return notes


def _vectorizer(stop_words: bool) -> Any:
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(stop_words="english" if stop_words else None)
