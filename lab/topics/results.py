"""A fitted topic model (:class:`TopicRun`) and what can be asked of it: tables, words, documents,
search, agreement with known labels, and CSV exports."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import validate
from lab.topics.errors import TopicInputError
from lab.topics.settings import Progress
from lab.topics.stages import Reduced


@dataclass
class TopicRun:
    """A fitted topic model and everything the tab shows about it.

    ``topics`` is one topic id per document (-1: outlier); ``info`` is ``get_topic_info()``; ``reduced_2d``
    the 2-d map coordinates (computed when first asked for: :meth:`layout`); ``timings`` seconds per stage
    (0 for a cached stage, listed in ``cached``).
    """

    topics: list[int]
    info: pd.DataFrame
    model: Any  # bertopic.BERTopic
    reduction: Reduced  # the reduced embeddings, and their 2-d layout once a map asks for it
    timings: dict[str, float]
    cached: dict[str, bool]
    docs: list[str]
    titles: list[str] | None
    embeddings: np.ndarray  # (n, dim)
    reduced: np.ndarray  # (n, n_components)
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def n_topics(self) -> int:
        """Topics found, not counting the outliers (-1)."""
        return len({t for t in self.topics if t != -1})

    @property
    def outlier_share(self) -> float:
        return sum(t == -1 for t in self.topics) / max(len(self.topics), 1)

    @property
    def reduced_2d(self) -> np.ndarray:
        """The 2-d map coordinates ``(n, 2)``; the first call computes them (:meth:`layout`)."""
        return self.layout()

    @property
    def layout_ready(self) -> bool:
        """Whether the 2-d map coordinates exist yet (maps cost a 2-d UMAP the first time otherwise)."""
        return self.reduction.layout_ready

    def layout(self, progress: Progress | None = None) -> np.ndarray:
        """The 2-d map coordinates ``(n, 2)``: a 2-d UMAP from the clustering run's neighbours, computed
        the first time a map asks (and kept with the reduction, for every run that shares it); its
        seconds are added to ``timings["umap_2d"]``."""
        plot, was_ready = self.reduction.layout(progress)
        if "umap_2d" not in self.cached:
            self.cached["umap_2d"] = was_ready
            self.timings["umap_2d"] = 0.0 if was_ready else self.reduction.seconds["umap_2d"]
        return plot

    def topic_name(self, topic: int) -> str:
        names = dict(zip(self.info["Topic"], self.info["Name"]))
        return str(names.get(topic, topic))


def topic_table(run: TopicRun) -> pd.DataFrame:
    """``get_topic_info()`` as the tab shows it: Topic, Count, Name, Representation (words joined)."""
    table = run.info[["Topic", "Count", "Name", "Representation"]].copy()
    table["Representation"] = [", ".join(w for w in words if w) for words in table["Representation"]]
    return table


def topic_words(run: TopicRun, topic: int) -> list[tuple[str, float]]:
    """A topic's top words with their c-TF-IDF weights (``get_topic(n)``)."""
    words = run.model.get_topic(topic)
    if not words:
        raise TopicInputError(f"There is no topic {topic}; topics run from -1 to {max(run.topics)}.")
    return [(str(w), float(s)) for w, s in words if w]


def representative_docs(run: TopicRun, topic: int) -> list[tuple[str | None, str]]:
    """A topic's representative documents as (title, text), the way BERTopic keeps them (3 per topic)."""
    texts = run.model.get_representative_docs(topic) or []
    index = {doc: i for i, doc in enumerate(run.docs)} if run.titles else {}
    return [(run.titles[index[t]] if t in index else None, t) for t in texts]


def search(run: TopicRun, query: str, top_n: int = 5) -> list[tuple[int, float, str]]:
    """``find_topics(query)``: the topics closest to a query, as (topic, similarity, name)."""
    query = (query or "").strip()
    if not query:
        raise TopicInputError("Type something to search for, e.g. 'football' or 'topic modeling'.")
    cap = validate.TOKEN_CAPS["topic_query"]
    validate.check_tokens(
        query, _token_counter(run), cap, what="The query", where="topic search", error=TopicInputError
    )
    found, similarity = run.model.find_topics(query, top_n=min(int(top_n), len(run.info)))
    return [(int(t), float(s), run.topic_name(int(t))) for t, s in zip(found, similarity)]


def _token_counter(run: TopicRun) -> Any:
    """Counts tokens as the run's sentence encoder does (its tokenizer), else words (a stand-in backend)."""
    backend = getattr(run.model, "embedding_model", None)
    tokenizer = getattr(getattr(backend, "embedding_model", None), "tokenizer", None)
    if tokenizer is None:
        return lambda text: len(text.split())
    return validate.token_counter(tokenizer)


def agreement(topics: Sequence[int], labels: Sequence[str] | None) -> dict[str, Any] | None:
    """How well topics match known labels: NMI and ARI over all documents (outliers as one cluster) and
    over the documents that got a topic; the outlier share. None without labels."""
    if labels is None:
        return None
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    topics = np.asarray(topics)
    labels = np.asarray(labels)
    if topics.shape != labels.shape:
        raise TopicInputError(f"{len(topics)} topics for {len(labels)} labels: give one label per document.")
    inside = topics != -1
    result: dict[str, Any] = {
        "documents": int(topics.size),
        "labels": int(len(set(labels.tolist()))),
        "topics": int(len(set(topics[inside].tolist()))),
        "outlier_share": float(1 - inside.mean()),
        "nmi_all": float(normalized_mutual_info_score(labels, topics)),
        "ari_all": float(adjusted_rand_score(labels, topics)),
        "nmi_non_outliers": None,
        "ari_non_outliers": None,
    }
    if inside.sum() >= 2:
        result["nmi_non_outliers"] = float(normalized_mutual_info_score(labels[inside], topics[inside]))
        result["ari_non_outliers"] = float(adjusted_rand_score(labels[inside], topics[inside]))
    return result


def label_crosstab(topics: Sequence[int], labels: Sequence[str], run: TopicRun | None = None) -> pd.DataFrame:
    """Documents per (topic, label): which labels each topic gathers."""
    frame = pd.crosstab(pd.Series(list(topics), name="Topic"), pd.Series(list(labels), name="Label"))
    if run is not None:
        frame.index = [f"{t}: {run.topic_name(t)}" for t in frame.index]
    return frame


def main_labels(topics: Sequence[int], labels: Sequence[str]) -> dict[int, tuple[str, float]]:
    """Each topic's most common label and its share of the topic's documents."""
    counts = label_crosstab(topics, labels)
    return {int(topic): (str(row.idxmax()), float(row.max() / row.sum())) for topic, row in counts.iterrows()}


# -- exports ----------------------------------------------------------------------------------------------


def export_topic_table(run: TopicRun, path: str | Path) -> Path:
    """Write the topic table (Topic, Count, Name, Representation, Representative_Docs) as CSV."""
    path = Path(path)
    table = run.info.copy()
    for column in ("Representation", "Representative_Docs"):
        if column in table:
            table[column] = [" | ".join(map(str, v)) if isinstance(v, list) else v for v in table[column]]
    table.to_csv(path, index=False)
    return path


def export_document_topics(run: TopicRun, path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Write one row per document: title, topic, topic name (and the known label)."""
    path = Path(path)
    names = dict(zip(run.info["Topic"], run.info["Name"]))
    frame = pd.DataFrame(
        {
            "title": run.titles if run.titles is not None else [d[:80] for d in run.docs],
            "topic": run.topics,
            "topic_name": [names.get(t, "") for t in run.topics],
        }
    )
    if labels is not None:
        frame["label"] = list(labels)
    frame.to_csv(path, index=False)
    return path


def short_label(text: str, width: int = 60) -> str:
    """A one-line label: whitespace collapsed, cut at ``width`` characters."""
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"
