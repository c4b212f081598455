"""Search a gallery: image embeddings kept on disk, an index of them, and cosine ranking.

Image embeddings are kept under ``LAB_CACHE_DIR/clip-embeddings/<model>/``, keyed by the image's pixels, so
a restart or a second user does not compute them again. Search is exact cosine (one matrix product) up to
``LAB_CLIP_APPROX_ABOVE`` images (default 50,000); above that, faiss codes pick candidates and exact cosine
ranks them (:mod:`~lab.clip.approximate`). :meth:`ImageIndex.save` writes an index to a folder and
:meth:`ImageIndex.load` memory-maps it back, so a million-image gallery need not sit in memory.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lab import config, paths
from lab.batching import alone
from lab.clip import approximate
from lab.clip.approximate import APPROX_ABOVE, RERANK, approx_above, faiss_index
from lab.clip.model import ClipModel, TextQuery, embed_queries
from lab.clip.prepare import ImageSource, PreparedImage, prepare_image
from lab.errors import InputError
from lab.images import BadImage

GALLERY_DIR = paths.GALLERY
BOOK_IMAGES = paths.BOOK_IMAGES

# The book's captions of its three images (chapter 9), in the order of its similarity matrix.
BOOK_CAPTIONS = {
    "puppy.png": "a puppy playing in the snow",
    "cat.png": "a pixelated image of a cute cat",
    "car.png": "A supercar on the road with the sunset in the background",
}

EXACT_LIMIT = APPROX_ABOVE  # the default of LAB_CLIP_APPROX_ABOVE (read by approx_above())
GALLERY_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class EmbeddingStore:
    """Image embeddings on disk, one ``.npy`` per (model, image pixels); safe for several processes."""

    def __init__(self, model_key: str) -> None:
        self.folder = config.cache_dir() / "clip-embeddings" / model_key

    def _path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        try:
            return np.load(self._path(digest), allow_pickle=False)
        except (OSError, ValueError):  # absent, or cut short by a crash: compute it again
            return None

    def put(self, digest: str, vector: np.ndarray) -> None:
        path = self._path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        with open(partial, "wb") as handle:
            np.save(handle, vector.astype(np.float32))
        os.replace(partial, path)  # atomic: a reader sees the old file or the whole new one


def vectors_of(prepared: Sequence[PreparedImage], model: ClipModel) -> tuple[np.ndarray, int]:
    """Embeddings of prepared images, from disk where known; returns them and how many were computed."""
    if not prepared:
        return np.zeros((0, model.embed_dim), np.float32), 0
    store = EmbeddingStore(model.key)
    vectors: list[np.ndarray | None] = [store.get(p.digest) for p in prepared]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        fresh = model.embed_images([prepared[i].image for i in missing])
        for i, vector in zip(missing, fresh):
            store.put(prepared[i].digest, vector)
            vectors[i] = vector
    return np.stack(vectors).astype(np.float32), len(missing)


def named_images(images: Sequence[Any] | Mapping[str, ImageSource]) -> list[tuple[str, ImageSource]]:
    """``(id, source)`` pairs from a mapping, pairs, paths (id: the file name) or bare images/bytes."""
    if isinstance(images, Mapping):
        pairs = [(str(k), v) for k, v in images.items()]
    else:
        pairs = []
        for number, item in enumerate(images, start=1):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                pairs.append(item)
            elif isinstance(item, (str, Path)):
                pairs.append((Path(item).name, item))
            else:
                pairs.append((f"image {number}", item))
    seen: set[str] = set()
    repeated = sorted({name for name, _ in pairs if name in seen or seen.add(name)})
    if repeated:
        raise InputError(
            f"Each image needs its own id; {', '.join(repeated)} appear more than once. "
            "Pass (id, image) pairs to name them."
        )
    return pairs


def default_gallery() -> list[tuple[str, Path]]:
    """The default gallery: the book's three images, then the photos of ``assets/gallery``."""
    book = [BOOK_IMAGES / name for name in BOOK_CAPTIONS]
    photos = sorted(p for p in GALLERY_DIR.iterdir() if p.suffix.lower() in GALLERY_SUFFIXES)
    return [(p.name, p) for p in [*book, *photos]]


# -- search ----------------------------------------------------------------------------------------


class EmptyGallery(InputError):
    """No image could be indexed."""


@dataclass
class ImageIndex:
    """Unit-length image embeddings with their ids; queries rank them by cosine similarity.

    Build with :meth:`build`, or :meth:`load` one that :meth:`save` wrote. ``problems`` lists the images that
    could not be used (the others are indexed), ``notes`` what was done to the rest (converted, cropped),
    ``computed`` how many embeddings were computed rather than read from disk.

    Search is exact up to :func:`~lab.clip.approximate.approx_above` images (``backend="auto"``) and
    approximate above: faiss codes of the vectors pick :data:`~lab.clip.approximate.RERANK` candidates, which
    exact cosine then ranks, so results carry exact scores.
    """

    ids: list[str]
    vectors: np.ndarray  # (n, embed_dim) float32, unit rows; a read-only memory map after load()
    model: ClipModel | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    computed: int = 0
    backend: Literal["auto", "exact", "faiss"] = "auto"
    _approximate: Any = field(default=None, repr=False)  # faiss codes of the first .ntotal rows
    _building: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        images: Sequence[Any] | Mapping[str, ImageSource],
        model: ClipModel,
        *,
        backend: Literal["auto", "exact", "faiss"] = "auto",
    ) -> ImageIndex:
        """Embed a gallery (in batches, with a progress bar) and index it.

        Args:
            images: paths (the file name is the id), ``(id, image)`` pairs, or ``{id: image}``; an image
                is a path, the file's bytes or a PIL image.
            model: from :func:`load`.
            backend: ``"exact"`` cosine by matrix product, ``"faiss"`` (codes pick, exact cosine ranks), or
                ``"auto"``: faiss above ``LAB_CLIP_APPROX_ABOVE`` images (default 50,000), when installed.

        Raises:
            EmptyGallery: no image could be used (the message lists why).
        """
        from tqdm.auto import tqdm

        pairs = named_images(images)
        ids: list[str] = []
        parts: list[np.ndarray] = []
        problems: list[str] = []
        notes: list[str] = []
        computed = 0
        # Open, hash and embed one batch at a time, so a large gallery never sits decoded in memory.
        with tqdm(total=len(pairs), desc="Embedding images", unit="img") as bar:
            for start in range(0, len(pairs), model.batch_size):
                prepared = []
                for name, source in pairs[start : start + model.batch_size]:
                    try:
                        prepared.append(prepare_image(source, name))
                    except BadImage as error:
                        problems.append(str(error))
                vectors, fresh = vectors_of(prepared, model)
                ids += [p.id for p in prepared]
                notes += [note for p in prepared for note in p.notes]
                parts.append(vectors)
                computed += fresh
                bar.update(len(pairs[start : start + model.batch_size]))
        if not ids:
            why = " ".join(problems) if problems else "The gallery is empty."
            raise EmptyGallery(f"No images to search. {why}".strip())
        return cls(ids, np.concatenate(parts), model, problems, notes, computed, backend)

    def extend(self, images: Sequence[Any] | Mapping[str, ImageSource]) -> ImageIndex:
        """A new index holding this one's images and ``images`` (this one is not changed).

        When this index searches approximately, the new one shares its codes and ranks the added images
        exactly, so a reader's few uploads do not rebuild the codes of a big gallery. Its vectors are a new
        array in memory, though, even when this index's are memory-mapped.
        """
        added = ImageIndex.build(images, self._model(), backend=self.backend)
        clash = sorted(set(self.ids) & set(added.ids))
        if clash:
            raise InputError(f"The gallery already has an image called {', '.join(clash)}.")
        return ImageIndex(
            self.ids + added.ids,
            np.concatenate([self.vectors, added.vectors]),
            self.model,
            added.problems,
            added.notes,
            added.computed,
            self.backend,
            self._faiss() if self._uses_faiss() else None,
        )

    def _model(self) -> ClipModel:
        if self.model is None:
            raise ValueError("This index was built from vectors alone; give it a model to embed queries.")
        return self.model

    # -- on disk -------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder``: ``vectors.npy``, ``ids.json``, ``codes.faiss`` when it searches
        approximately (built now if need be), and ``index.json`` last, which marks a complete save.

        Files are replaced whole, so a process that has the old ones memory-mapped keeps reading them.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _replace(folder / "vectors.npy", lambda handle: np.save(handle, np.asarray(self.vectors, np.float32)))
        _replace(folder / "ids.json", lambda handle: handle.write(json.dumps(self.ids).encode()))
        codes = folder / "codes.faiss"
        if self._uses_faiss():
            approximate.write(self._faiss(), codes)
        else:
            codes.unlink(missing_ok=True)
        about = {
            "format": 1,
            "count": len(self.ids),
            "dim": int(self.vectors.shape[1]),
            "model": self.model.key if self.model is not None else None,
            "backend": self.backend,
            "coded_rows": int(self._approximate.ntotal) if codes.exists() else 0,
            "problems": self.problems,
            "notes": self.notes,
        }
        _replace(folder / "index.json", lambda handle: handle.write(json.dumps(about).encode()))
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: ClipModel | None = None) -> ImageIndex:
        """An index written by :meth:`save`, its vectors (and codes, as far as faiss allows) memory-mapped.

        Args:
            folder: what :meth:`save` wrote.
            model: the CLIP it was built with, to embed text and image queries (``None``: vectors only).

        Raises:
            InputError: the folder holds no complete index, or one built with another model.
        """
        folder = Path(folder)
        try:
            about = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError):
            raise InputError(f"{folder} holds no saved CLIP index (index.json is missing).") from None
        if model is not None and about["model"] not in (None, model.key):
            raise InputError(
                f"The index in {folder} was built with another CLIP ({about['model']}); "
                f"load it with that model, not {model.key}."
            )
        vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)  # pages read on use
        ids = json.loads((folder / "ids.json").read_text())
        codes = approximate.read(folder / "codes.faiss") if about["coded_rows"] else None
        return cls(ids, vectors, model, about["problems"], about["notes"], 0, about["backend"], codes)

    # -- queries -------------------------------------------------------------------------------------
    def text_scores(self, query: str) -> np.ndarray:
        """Cosine similarity of every indexed image to a text, ``(n,)``."""
        return self.vector_scores(self.text_vector(query))

    def text_vector(self, query: str) -> np.ndarray:
        """The unit embedding of a text query by the index's model (a batch of one)."""
        return alone(embed_queries, TextQuery.prepare(query, self._model()))

    def vector_scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of every indexed image to a unit vector, ``(n,)``."""
        return self.vectors @ np.asarray(query, dtype=np.float32)

    def image_scores(self, image: ImageSource) -> np.ndarray:
        """Cosine similarity of every indexed image to an image, ``(n,)``."""
        return self.vectors @ image_vector(image, self._model())

    def search_text(self, query: str, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` images closest to a text: ``[(id, cosine), ...]``, best first."""
        return self.search_vector(self.text_vector(query), k)

    def search_image(self, image: ImageSource, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` images closest to an image (an indexed image itself comes first, at cosine 1)."""
        return self.search_vector(image_vector(image, self._model()), k)

    def search_vector(self, query: np.ndarray, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` images closest to a unit vector, best first, with their exact cosines."""
        if k < 1:
            raise InputError("Ask for at least one result (k ≥ 1).")
        k = min(k, len(self.ids))
        query = np.asarray(query, dtype=np.float32)
        if not self._uses_faiss():
            return self.top(self.vectors @ query, k)
        codes = self._faiss()
        rows = approximate.candidates(codes, query, max(RERANK, 40 * k))
        rows = np.concatenate([rows, np.arange(codes.ntotal, len(self.ids))])  # added after the codes
        scores = self.vectors[rows] @ query  # (len(rows),): only these rows of a memory map are read
        return [(self.ids[rows[i]], float(scores[i])) for i in _best(scores, k)]

    def top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` highest of ``scores`` (one per image) as ``[(id, score), ...]``, best first."""
        return [(self.ids[r], float(scores[r])) for r in _best(scores, k)]

    def uses_approximate_search(self) -> bool:
        """Whether queries go through faiss codes (``backend``, the gallery's size and faiss decide)."""
        return self._uses_faiss()

    def _uses_faiss(self) -> bool:
        if self.backend == "exact":
            return False
        if self.backend == "faiss" or self._approximate is not None:
            return True
        return len(self.ids) > approx_above() and approximate.faiss_installed()

    def _faiss(self) -> Any:
        with self._building:  # the first queries of several readers wait for one build
            if self._approximate is None:
                self._approximate = faiss_index(self.vectors)
            return self._approximate


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, best first (ties keep their order)."""
    k = max(1, min(k, len(scores)))
    # argpartition finds the k best in O(n); only those k are then sorted.
    rows = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return rows[np.argsort(-scores[rows], kind="stable")]


def _replace(path: Path, write: Any) -> None:
    """Write a file through a partial one: a reader sees the old file or the whole new one."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as handle:
        write(handle)
    os.replace(partial, path)


def image_vector(image: ImageSource, model: ClipModel, name: str = "the query image") -> np.ndarray:
    """The unit embedding of one image (from disk if this image was embedded before)."""
    vectors, _ = vectors_of([prepare_image(image, name)], model)
    return vectors[0]
