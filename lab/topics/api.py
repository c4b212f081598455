"""The topic tab's web API as plain functions: ``/topics_fit``, ``/topics_search`` and
``/topics_representations`` (the tab publishes these methods under their names), all answering in JSON
types and sharing the last few fitted runs, so a search after a fit with the same parameters fits nothing.

::

    endpoints = TopicAPI()
    endpoints.topics_fit("wikipedia", min_cluster_size=40)["n_topics"]
    endpoints.topics_search("football", min_cluster_size=40)
"""

from __future__ import annotations

from typing import Any

from lab import validate
from lab.errors import InputError
from lab.topics.errors import TopicInputError
from lab.topics.representations import compare_representations
from lab.topics.results import search
from lab.topics.runs import RunStore
from lab.topics.settings import TopicSettings
from lab.topics.view import fit_report


class TopicAPI:
    """The three endpoints, sharing the runs in one :class:`RunStore` (the last ``size`` kept)."""

    def __init__(self, size: int = 3) -> None:
        self.runs = RunStore(size)

    def topics_fit(
        self,
        corpus: str = "wikipedia",
        n_neighbors: int = 15,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        nr_topics: int | None = None,
        stop_words: bool = True,
    ) -> dict[str, Any]:
        """Fit BERTopic on a named corpus ("wikipedia" offline, "arxiv_nlp" with the Hub) with the book's
        pipeline (stop_words: drop English stop words from the topic words). Returns the topic table, stage
        times (seconds; cached stages 0), and agreement with the corpus's labels (NMI/ARI over all
        documents and over non-outliers) where it has labels."""
        settings = _settings(n_neighbors, min_cluster_size, min_samples, nr_topics, stop_words)
        run, data = self.runs.get(_corpus(corpus), settings)
        return fit_report(run, data)

    def topics_search(
        self,
        query: str,
        top_n: int = 5,
        corpus: str = "wikipedia",
        n_neighbors: int = 15,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        nr_topics: int | None = None,
        stop_words: bool = True,
    ) -> list[dict[str, Any]]:
        """BERTopic's find_topics(query): the topics closest to the query, best first, with cosine
        similarity, for the model topics_fit fits with the same parameters."""
        top_n = _checked(validate.bound, "top_n", top_n)
        query = _checked(validate.text, query, "query", required=False)
        settings = _settings(n_neighbors, min_cluster_size, min_samples, nr_topics, stop_words)
        run, _ = self.runs.get(_corpus(corpus), settings)
        hits = search(run, query, top_n)
        return [{"topic": t, "similarity": s, "name": name} for t, s, name in hits]

    def topics_representations(
        self,
        kinds: list[str] | None = None,
        diversity: float = 0.2,
        max_topics: int = 10,
        corpus: str = "wikipedia",
        n_neighbors: int = 15,
        min_cluster_size: int = 50,
        min_samples: int | None = None,
        nr_topics: int | None = None,
        stop_words: bool = True,
    ) -> list[dict[str, Any]]:
        """The book's representation table: per topic the c-TF-IDF words ("Original") and the words of
        each of kinds ("keybert", "mmr", "generation"), for the first max_topics topics."""
        diversity = _checked(validate.bound, "diversity", diversity)
        max_topics = _checked(validate.bound, "max_topics", max_topics)
        kinds = _checked(validate.texts, kinds, "kinds", max_items=3, max_chars=20)
        settings = _settings(n_neighbors, min_cluster_size, min_samples, nr_topics, stop_words)
        run, _ = self.runs.get(_corpus(corpus), settings)
        table = compare_representations(
            run,
            run.docs,
            kinds=tuple(kinds or ("keybert", "mmr")),
            diversity=diversity,
            max_topics=max_topics,
            generation_topics=max_topics,
        )
        return table.to_dict(orient="records")


def _checked(check: Any, *args: Any, **kwargs: Any) -> Any:
    """A :mod:`lab.validate` check whose refusal is the topic feature's error."""
    try:
        return check(*args, **kwargs)
    except InputError as error:
        raise TopicInputError(str(error)) from None


def _corpus(name: Any) -> str:
    return _checked(validate.text, name, "corpus", max_chars=40)


def _settings(
    n_neighbors: int, min_cluster_size: int, min_samples: int | None, nr_topics: int | None, stop_words: bool
) -> TopicSettings:
    """The settings the endpoints' shared parameters name (0 or None: not set)."""
    form = {
        "n_neighbors": n_neighbors,
        "min_cluster_size": min_cluster_size,
        "min_samples": min_samples,
        "nr_topics": nr_topics,
        "stop_words": stop_words,
    }
    return TopicSettings.from_form(form)
