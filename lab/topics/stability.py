"""Why topics move: a sweep of ``min_cluster_size``, three UMAP seeds side by side, outlier strategies.

BERTopic's most frequent complaints are topics that change between runs and 30–50 % outliers. Both come
from two stages: UMAP's random layout (a different seed, or another machine's floating point, gives a
slightly different 5-d map) and HDBSCAN's choice of clusters in that map (``min_cluster_size`` sets how big
a dense group must be to count; everything else is an outlier). Three measurements make that visible,
each reusing what is cached (:mod:`lab.topics.stages`)::

    run = topics.fit(docs, embeddings=vectors)
    topics.sweep_min_cluster_size(run, labels)   # one HDBSCAN per value, on the run's cached UMAP
    topics.seed_agreement(run)                   # one UMAP + HDBSCAN per extra seed; ARI between runs
    topics.compare_outlier_strategies(run, labels)  # BERTopic's reduce_outliers strategies side by side

Each result is a list of plain rows (dataclasses); :mod:`lab.topics.view` draws them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lab.topics.errors import TopicInputError
from lab.topics.results import TopicRun
from lab.topics.settings import Progress
from lab.topics.stages import cluster, reduce

SWEEP_SIZES = (5, 10, 15, 25, 40, 60, 100)  # around the book's 50 for 10k documents, and smaller
SEEDS = (42, 7, 2024)
# reduce_outliers' strategies that need nothing beyond a fitted model ("probabilities" needs HDBSCAN's
# full probability matrix, which the book's fit does not compute).
OUTLIER_STRATEGIES = ("c-tf-idf", "embeddings", "distributions")


@dataclass(frozen=True)
class SweepPoint:
    """One ``min_cluster_size``: the topics HDBSCAN found, the outlier share, NMI against the labels."""

    min_cluster_size: int
    n_topics: int
    outlier_share: float
    nmi: float | None  # None without labels
    seconds: float


@dataclass(frozen=True)
class SeedRun:
    seed: int
    n_topics: int
    outlier_share: float
    topics: np.ndarray  # (n,) topic per document, -1 outliers


@dataclass(frozen=True)
class SeedAgreement:
    """The same settings under several UMAP seeds, and how much their topics agree (ARI, 1 = same)."""

    runs: list[SeedRun]
    ari: dict[tuple[int, int], float]  # (seed a, seed b) → ARI of their topic assignments

    @property
    def mean_ari(self) -> float:
        return float(np.mean(list(self.ari.values()))) if self.ari else 1.0


@dataclass(frozen=True)
class OutlierStrategy:
    """One of BERTopic's ``reduce_outliers`` strategies applied to the run's HDBSCAN outliers."""

    strategy: str
    outliers_before: int
    outliers_after: int
    nmi: float | None
    seconds: float

    @property
    def moved(self) -> int:
        return self.outliers_before - self.outliers_after


def _clustering_params(run: TopicRun) -> dict:
    if run.params.get("clustering") != "hdbscan":
        raise TopicInputError("Topic stability looks at HDBSCAN's choices; this run clustered with k-means.")
    return dict(run.params["hdbscan"])


def _nmi(topics: np.ndarray, labels: Sequence[str] | None) -> float | None:
    if labels is None:
        return None
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(np.asarray(labels), topics))


def sweep_min_cluster_size(
    run: TopicRun,
    labels: Sequence[str] | None = None,
    sizes: Sequence[int] = SWEEP_SIZES,
    progress: Progress | None = None,
) -> list[SweepPoint]:
    """One HDBSCAN per ``min_cluster_size`` on the run's cached 5-d UMAP, the run's other settings kept.

    Sizes at or above the number of documents are left out (HDBSCAN needs at least that many).
    """
    params = _clustering_params(run)
    say = progress or (lambda fraction, text: None)
    usable = [s for s in sizes if 2 <= s < len(run.topics)]
    points = []
    for index, size in enumerate(usable):
        say(index / max(len(usable), 1), f"HDBSCAN with min_cluster_size={size}")
        started = time.perf_counter()
        clusters, _ = cluster(run.reduced, {**params, "min_cluster_size": int(size)}, seed=run.params["seed"])
        found = clusters.labels
        points.append(
            SweepPoint(
                int(size),
                len(set(found.tolist()) - {-1}),
                float((found == -1).mean()),
                _nmi(found, labels),
                time.perf_counter() - started,
            )
        )
    return points


def seed_agreement(
    run: TopicRun, seeds: Sequence[int] = SEEDS, progress: Progress | None = None
) -> SeedAgreement:
    """The run's UMAP + HDBSCAN again with each seed (the run's own seed is reused from the cache), and
    the adjusted Rand index between every two seeds' topic assignments."""
    from sklearn.metrics import adjusted_rand_score

    params = _clustering_params(run)
    say = progress or (lambda fraction, text: None)
    runs = []
    for index, seed in enumerate(seeds):
        say(index / len(seeds), f"UMAP and HDBSCAN with seed {seed}")
        reduced, _ = reduce(run.embeddings, run.params["umap"], method=run.params["reduction"], seed=seed)
        clusters, _ = cluster(reduced.clustering, params, seed=seed)
        found = clusters.labels
        runs.append(SeedRun(int(seed), len(set(found.tolist()) - {-1}), float((found == -1).mean()), found))
    ari = {
        (a.seed, b.seed): float(adjusted_rand_score(a.topics, b.topics))
        for a, b in itertools.combinations(runs, 2)
    }
    return SeedAgreement(runs, ari)


def compare_outlier_strategies(
    run: TopicRun,
    labels: Sequence[str] | None = None,
    strategies: Sequence[str] = OUTLIER_STRATEGIES,
    progress: Progress | None = None,
) -> list[OutlierStrategy]:
    """Each ``reduce_outliers`` strategy on the run's HDBSCAN outliers (before any reduction the run made),
    with how many it moved into topics and the NMI that results."""
    params = _clustering_params(run)
    say = progress or (lambda fraction, text: None)
    clusters, _ = cluster(run.reduced, params, seed=run.params["seed"])
    before = clusters.labels
    outliers = int((before == -1).sum())
    rows = []
    for index, strategy in enumerate(strategies):
        say(index / len(strategies), f"reduce_outliers with strategy={strategy}")
        started = time.perf_counter()
        if outliers:
            after = np.asarray(
                run.model.reduce_outliers(
                    run.docs,
                    before.tolist(),
                    strategy=strategy,
                    embeddings=run.embeddings if strategy == "embeddings" else None,
                )
            )
        else:
            after = before
        seconds, left = time.perf_counter() - started, int((after == -1).sum())
        rows.append(OutlierStrategy(strategy, outliers, left, _nmi(after, labels), seconds))
    return rows
