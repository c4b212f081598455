"""When the topics collapse: notice it, say what HDBSCAN did, and find the setting that undoes it.

HDBSCAN builds a tree of clusters and, with the book's excess-of-mass selection (``"eom"``), keeps a
cluster rather than its sub-clusters whenever the whole is more stable than its parts together. On some
data that picks a split near the top of the tree: two or three huge topics instead of dozens. A small
change of ``min_cluster_size`` (or of the UMAP layout, which differs a little between machines) can tip
the choice either way, which surprises a student who moved a slider by ten. ::

    run = topics.fit(docs, embeddings=vectors, hdbscan_params={"min_cluster_size": 40})
    collapse = topics.detect_collapse(run, previous=earlier_run)
    if collapse:
        print(collapse.explanation())
        fix = topics.find_fix(run, collapse)   # one HDBSCAN per setting tried, on the cached UMAP
        if fix:
            run = topics.fit(docs, embeddings=vectors, hdbscan_params=fix.hdbscan_params)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lab.topics.results import TopicRun
from lab.topics.settings import Progress
from lab.topics.stages import cluster

FEW_TOPICS = 2  # this many topics or fewer, where more were found (or are possible), is a collapse
OUTLIER_JUMP = 0.25  # the outlier share rising by more than this is a collapse too


@dataclass(frozen=True)
class Collapse:
    """What a collapsed run looks like, next to the run before it (``before_*``: None without one)."""

    n_topics: int
    outlier_share: float
    before_topics: int | None
    before_outliers: float | None
    largest_share: float  # the largest topic's share of the documents
    root_split: bool  # the topics are the first split of HDBSCAN's cluster tree
    min_cluster_size: int
    selection: str  # HDBSCAN's cluster_selection_method

    @property
    def outliers_jumped(self) -> bool:
        return self.before_outliers is not None and self.outlier_share - self.before_outliers > OUTLIER_JUMP

    @property
    def largest_words(self) -> str:
        """The largest topic's share in words: "47%", or "99.6%" where rounding would say "100%"."""
        return f"{self.largest_share:.1%}" if 0.995 <= self.largest_share < 1 else f"{self.largest_share:.0%}"

    def explanation(self) -> str:
        """What happened and why, in plain words (Markdown)."""
        if self.before_topics is not None:
            before = "" if self.before_outliers is None else f" with {self.before_outliers:.0%}"
            change = (
                f"HDBSCAN found **{self.n_topics} topic{'s' * (self.n_topics != 1)}** with "
                f"**{self.outlier_share:.0%} outliers**, where the previous fit found "
                f"{self.before_topics}{before}."
            )
        else:
            change = f"HDBSCAN found only **{self.n_topics} topic{'s' * (self.n_topics != 1)}**."
        if self.selection == "eom" and not (self.outliers_jumped and self.n_topics > FEW_TOPICS):
            where = (
                "the first split of its cluster tree"
                if self.root_split
                else "a few big clusters high up in its cluster tree"
            )
            why = (
                f"Its excess-of-mass selection (cluster_selection_method='eom', the book's) kept {where}: "
                "a cluster is kept instead of the smaller clusters inside it when, as a whole, it holds its "
                f"documents over a wider range of density than they do together. The largest topic now holds "
                f"{self.largest_words} of the documents. Moving min_cluster_size a little (or a UMAP "
                "layout that differs slightly, as it does between machines) can tip this choice either way."
            )
        else:
            why = (
                f"With min_cluster_size={self.min_cluster_size}, the documents of every group smaller than "
                "that (and not dense enough to join a larger one) are outliers; the largest topic holds "
                f"{self.largest_words} of the documents."
            )
        return f"{change} {why}"


@dataclass(frozen=True)
class Fix:
    """A clustering setting that undoes a collapse, with what it gives on the same (cached) UMAP."""

    hdbscan_params: dict[str, Any]  # all of HDBSCAN's parameters, to fit with
    changed: dict[str, Any]  # the parameters that differ from the collapsed run's
    n_topics: int
    outlier_share: float

    def label(self) -> str:
        """The button's words: ``Refit with cluster_selection_method='leaf' (48 topics)``."""
        settings = ", ".join(f"{name}={value!r}" for name, value in self.changed.items())
        return f"Refit with {settings} ({self.n_topics} topics, {self.outlier_share:.0%} outliers)"


def detect_collapse(run: TopicRun, previous: TopicRun | None = None) -> Collapse | None:
    """The run's collapse, if its topics collapsed, else None.

    Against ``previous`` (a run on the same documents and reduction, e.g. before an HDBSCAN change): the
    topics fall to :data:`FEW_TOPICS` or fewer, or to less than half, or the outlier share rises by more
    than :data:`OUTLIER_JUMP`. Without one: :data:`FEW_TOPICS` or fewer topics where ``min_cluster_size``
    leaves room for at least four times as many. Only HDBSCAN runs collapse (k-means makes the topics it is
    asked for), and a run merged down with ``nr_topics`` is not checked.
    """
    params = run.params
    if params["clustering"] != "hdbscan" or params["nr_topics"] is not None:
        return None
    size = int(params["hdbscan"]["min_cluster_size"])
    comparable = previous is not None and _same_reduction(run, previous)
    if comparable:
        assert previous is not None
        before_topics = previous.n_topics
        # Outlier reduction switched on or off changes the share by design: compare topics only then.
        same_outliers = previous.params["outliers"] == params["outliers"]
        before_outliers = previous.outlier_share if same_outliers else None
        collapsed = _collapsed(before_topics, before_outliers, run.n_topics, run.outlier_share)
    else:
        before_topics = before_outliers = None
        collapsed = run.n_topics <= FEW_TOPICS and len(run.topics) >= 4 * FEW_TOPICS * size
    if not collapsed:
        return None
    labels = np.asarray(run.topics)
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(1)
    return Collapse(
        n_topics=run.n_topics,
        outlier_share=run.outlier_share,
        before_topics=before_topics,
        before_outliers=before_outliers,
        largest_share=float(counts.max() / len(labels)),
        root_split=_is_root_split(run),
        min_cluster_size=size,
        selection=str(params["hdbscan"].get("cluster_selection_method", "eom")),
    )


def find_fix(run: TopicRun, collapse: Collapse, *, progress: Progress | None = None) -> Fix | None:
    """The clustering setting nearest the run's that does not collapse, or None if none tried helps.

    Tries, each as one HDBSCAN on the run's (cached) reduced embeddings: ``min_cluster_size`` a little above
    and a little below the run's with the same selection, then ``cluster_selection_method="leaf"`` (the
    finest clusters of the tree instead of the most stable ones). A nearby ``min_cluster_size`` is offered
    first (the smallest change); leaf otherwise. The results are cached, so refitting with the fix
    clusters nothing again.
    """
    say = progress or (lambda fraction, text: None)
    params = dict(run.params["hdbscan"])
    size = int(params["min_cluster_size"])
    step = max(2, size // 8)
    tries: list[dict[str, Any]] = [
        {"min_cluster_size": s} for s in (size + step, size - step) if 2 <= s <= len(run.topics)
    ]
    if params.get("cluster_selection_method", "eom") != "leaf":
        tries.append({"cluster_selection_method": "leaf"})
    for i, changed in enumerate(tries):
        say(i / len(tries), f"The topics collapsed: trying HDBSCAN with {_words(changed)}")
        candidate = {**params, **changed}
        clusters, _ = cluster(run.reduced, candidate, seed=int(run.params["seed"]))
        labels = clusters.labels
        n_topics = len(set(labels.tolist()) - {-1})
        outliers = float((labels == -1).mean())
        if n_topics == 0 or _collapsed(collapse.before_topics, collapse.before_outliers, n_topics, outliers):
            continue
        if collapse.before_topics is None and n_topics <= collapse.n_topics:
            continue
        return Fix(candidate, changed, n_topics, outliers)  # the smallest change that helps: stop here
    return None


def _collapsed(
    before_topics: int | None, before_outliers: float | None, n_topics: int, outliers: float
) -> bool:
    """Whether topics (and outlier share) collapsed against the run before (None: no run to compare)."""
    if before_topics is None:
        return n_topics <= FEW_TOPICS
    fewer = before_topics > FEW_TOPICS and (n_topics <= FEW_TOPICS or 2 * n_topics < before_topics)
    noisier = before_outliers is not None and outliers - before_outliers > OUTLIER_JUMP
    return fewer or noisier


def _same_reduction(run: TopicRun, previous: TopicRun) -> bool:
    """Whether two runs clustered the same reduced embeddings (only clustering settings differ)."""
    same = ("embedding_model", "umap", "reduction", "seed")
    return (
        len(run.topics) == len(previous.topics)
        and all(run.params[k] == previous.params[k] for k in same)
        and (run.reduction is previous.reduction or np.array_equal(run.reduced, previous.reduced))
    )


def _is_root_split(run: TopicRun) -> bool:
    """Whether the topics are exactly the root's child clusters in HDBSCAN's condensed tree."""
    estimator = getattr(getattr(run.model, "hdbscan_model", None), "estimator", None)
    tree = getattr(estimator, "condensed_tree_", None)
    if tree is None:
        return False
    rows = tree.to_numpy()  # (parent, child, lambda_val, child_size)
    root = rows["parent"].min()
    children = int(((rows["parent"] == root) & (rows["child_size"] > 1)).sum())
    return children >= 2 and run.n_topics == children


def _words(changed: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in changed.items())


def diagnose(
    run: TopicRun, previous: TopicRun | None = None, *, progress: Progress | None = None
) -> tuple[Collapse | None, Fix | None]:
    """:func:`detect_collapse`, then :func:`find_fix` if the topics collapsed: (None, None) if they did
    not."""
    collapse = detect_collapse(run, previous)
    return (collapse, find_fix(run, collapse, progress=progress)) if collapse is not None else (None, None)
