"""The first stage: document embeddings, kept on disk by model id and corpus hash.

:func:`encode` is the forward step (the one place that runs the sentence encoder); :func:`embed_documents`
prepares around it (cache, truncation count, progress); :func:`lab_embedder` gives BERTopic the same
encoder for queries (``find_topics``) and representation models.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lab import catalog, config, models
from lab.forward import forward
from lab.topics.corpora import corpus_hash
from lab.topics.settings import MINILM, Progress
from lab.topics.stages import STAGE_RUNS


@dataclass
class Embedded:
    """Document embeddings and how they were obtained."""

    vectors: np.ndarray  # (n, dim)
    model: str
    truncated: int  # documents longer than the model reads
    max_tokens: int
    cached: bool
    seconds: float


@forward("embedding documents", duration=120)
def encode(model_id: str, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Embed texts with a sentence-transformers model: one float32 vector per text, ``(n, dim)``."""
    with models.sentence_encoder(model_id) as encoder:
        vectors = encoder.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
    return np.asarray(vectors, dtype=np.float32)


def _embedding_file(model_id: str, digest: str) -> Path:
    folder = config.cache_dir() / "topics" / "embeddings" / catalog.slug(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest[:32]}.npy"


def _count_truncated(model_id: str, docs: list[str]) -> tuple[int, int]:
    """How many documents are longer than the model reads, and its limit in word pieces."""
    with models.sentence_encoder(model_id) as encoder:
        max_tokens = int(encoder.max_seq_length or 512)
        ids = encoder.tokenizer(docs, add_special_tokens=True, truncation=False)["input_ids"]
    return sum(len(i) > max_tokens for i in ids), max_tokens


def embed_documents(
    docs: Sequence[str], model_id: str = MINILM, *, progress: Progress | None = None, batch: int = 256
) -> Embedded:
    """Embed documents with a sentence-transformers model, kept on disk by model id and corpus hash.

    Documents longer than the model's limit are truncated by the model; how many is counted.
    """
    started = time.perf_counter()
    docs = list(docs)
    path = _embedding_file(model_id, corpus_hash(docs))
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        vectors = np.load(path, allow_pickle=False)
        info = json.loads(meta.read_text())
        if vectors.shape[0] == len(docs):
            return Embedded(vectors, model_id, info["truncated"], info["max_tokens"], True, 0.0)
    STAGE_RUNS["embeddings"] += 1
    truncated, max_tokens = _count_truncated(model_id, docs)
    parts = []
    for start in range(0, len(docs), batch):
        if progress is not None:
            progress(start / len(docs), f"Embedding documents with {model_id}: {start:,}/{len(docs):,}")
        parts.append(encode(model_id, docs[start : start + batch]))
    vectors = np.concatenate(parts)  # (n, dim)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors, allow_pickle=False)
    tmp.replace(path)  # never leave a half-written file under the real name
    meta.write_text(json.dumps({"model": model_id, "truncated": truncated, "max_tokens": max_tokens}))
    return Embedded(vectors, model_id, truncated, max_tokens, False, time.perf_counter() - started)


@functools.cache
def _embedder_class() -> type:
    """:class:`LabEmbedder`, built on first use: importing BERTopic takes seconds; the app starts without."""
    from bertopic.backend import BaseEmbedder

    class LabEmbedder(BaseEmbedder):
        """A BERTopic embedding backend that leases the lab's cached sentence-transformers model per call.

        BERTopic refuses ``find_topics`` (and KeyBERTInspired, MMR) without an embedding model, so every
        fitted model gets one, even when the documents' embeddings were precomputed.
        """

        def __init__(self, model_id: str = MINILM) -> None:
            super().__init__()
            self.model_id = model_id

        def embed(self, documents: list[str], verbose: bool = False) -> np.ndarray:
            return encode(self.model_id, documents, batch_size=64)

        def __repr__(self) -> str:
            return f"LabEmbedder({self.model_id!r})"

    # So that pickle finds it by name, as a class of this module.
    LabEmbedder.__qualname__ = "LabEmbedder"
    globals()["LabEmbedder"] = LabEmbedder
    return LabEmbedder


def lab_embedder(model_id: str = MINILM) -> Any:
    """A BERTopic embedding backend for ``model_id`` that loads it through :mod:`lab.models`."""
    return _embedder_class()(model_id)
