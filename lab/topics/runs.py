"""Fitted runs kept for later: one page session's run with its download folder (:class:`TopicSession`),
and the last few runs on named corpora shared by every web-API caller (:class:`RunStore`)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.topics.collapse import Fix
from lab.topics.corpora import Corpus, load_corpus
from lab.topics.datamap import interactive_map, save_interactive_map
from lab.topics.pipeline import fit_corpus
from lab.topics.results import TopicRun, export_document_topics, export_topic_table
from lab.topics.settings import TopicSettings
from lab.topics.stages import Memo

MAP_FILE = "topic_map.html"


@dataclass
class TopicSession:
    """One session's fitted run, its corpus, and the folder its downloads are written to (one folder per
    session, kept across fits, removed by :meth:`close`)."""

    run: TopicRun
    corpus: Corpus
    folder: Path
    fix: Fix | None = None  # a setting that undoes a collapse of the run's topics, if they collapsed
    code: str = ""  # the Python that reproduces the fit (lab.snippets.topics), for what builds on it

    @classmethod
    def start(
        cls,
        run: TopicRun,
        corpus: Corpus,
        previous: TopicSession | None = None,
        fix: Fix | None = None,
        new_folder: Callable[[], Path] | None = None,
    ) -> TopicSession:
        """A session for a new run, in the previous session's folder if it still exists; the tables are
        written there at once, and the previous run's map (of the old topics) is removed. ``fix``: the
        setting that undoes a collapse of the run's topics (:func:`lab.topics.find_fix`). ``new_folder``
        makes the folder of a first session (default: a new folder in the system's temporary folder; a
        served lab gives one only the student can read)."""
        if previous is not None and previous.folder.is_dir():
            folder = previous.folder
        elif new_folder is not None:
            folder = new_folder()
        else:
            folder = Path(tempfile.gettempdir()) / "llm-lab-topics" / uuid.uuid4().hex[:12]
            folder.mkdir(parents=True, exist_ok=True)
        (folder / MAP_FILE).unlink(missing_ok=True)
        export_topic_table(run, folder / "topics.csv")
        export_document_topics(run, folder / "document_topics.csv", corpus.labels)
        return cls(run, corpus, folder, fix)

    def interactive_map(self, *, extras: bool = False) -> tuple[str, Path]:
        """The run's interactive map (:func:`lab.topics.interactive_map`, titled by the corpus, with its
        dates), saved next to the tables; ``extras``: labels at medoids and topic outlines. Returns the
        page and its file."""
        page = interactive_map(
            self.run,
            title=f"Topics of {self.corpus.name}",
            dates=self.corpus.dates,
            medoids=extras,
            boundaries=extras,
        )
        return page, save_interactive_map(page, self.folder / MAP_FILE)

    def downloads(self) -> list[str]:
        """The files written for this session: topic table, document topics, and the map once built."""
        return sorted(str(p) for p in self.folder.iterdir())

    def close(self) -> None:
        """Remove the session's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def end(session: TopicSession | None) -> None:
        """Close a session if there is one (for ``gr.State(delete_callback=...)``)."""
        if session is not None:
            session.close()


class RunStore:
    """The last ``size`` runs fitted on named corpora, shared by every caller: asking again with the same
    corpus and settings returns the same run without fitting again. Safe to use from several threads."""

    def __init__(self, size: int = 3) -> None:
        self._runs = Memo(size)

    def get(self, corpus_name: str, settings: TopicSettings) -> tuple[TopicRun, Corpus]:
        """The run of ``settings`` on the named corpus (:func:`lab.topics.load_corpus`), and the corpus."""
        key = (corpus_name, settings.key())
        kept = self._runs.get(key)
        if kept is not None:
            return kept
        corpus = load_corpus(corpus_name)
        run = fit_corpus(corpus, settings)
        self._runs.put(key, (run, corpus))
        return run, corpus

    def __len__(self) -> int:
        return len(self._runs)
