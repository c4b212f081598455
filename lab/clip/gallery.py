"""The galleries an app searches: one default gallery shared by everyone, plus each reader's own images.

A :class:`Gallery` is one reader's additions (kept in a temporary folder; the app holds it in the reader's
session). :class:`Galleries` holds what every reader shares: a described CLIP per model name and the default
gallery's index per model, each built once, behind one lock::

    galleries = clip.Galleries()
    mine = clip.Gallery()
    mine.add(["holiday.zip"], clip.UploadLimits())
    model = galleries.model(clip.DEFAULT_MODEL)
    galleries.index(mine, model).search_text("a lake", k=3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.clip.approximate import approx_above
from lab.clip.index import EmbeddingStore, ImageIndex, default_gallery
from lab.clip.model import ClipModel, load, parse_name
from lab.clip.prepare import prepare_image
from lab.clip.uploads import UploadLimits, read_uploads
from lab.errors import InputError
from lab.images import BadImage


@dataclass
class Added:
    """What :meth:`Gallery.add` did: how many images it kept, the refused files and notes on the rest."""

    count: int
    problems: list[str]
    notes: list[str]


@dataclass
class Gallery:
    """One reader's additions to the default gallery (files in a temporary folder) and what they last saw."""

    folder: str | None = None
    uploads: list[tuple[str, str]] = field(default_factory=list)  # (id, path of the prepared JPEG)
    index: ImageIndex | None = None
    index_of: tuple[str, int] | None = None  # (model key, number of uploads) the index was built for
    results: list[str] = field(default_factory=list)  # ids in the results gallery, in order

    def paths(self) -> dict[str, str]:
        """Every image this reader can see, id → file: the default gallery, then their own."""
        return {**gallery_paths(None), **dict(self.uploads)}

    def add(self, files: Sequence[str | Path], limits: UploadLimits) -> Added:
        """Check, shrink and keep uploaded images (files or zips); nothing is embedded yet.

        Raises:
            InputError: the gallery already holds ``limits.max_images`` added images.
        """
        room = limits.max_images - len(self.uploads)
        if room <= 0:
            raise InputError(
                f"Your gallery already holds {len(self.uploads)} added images, the most it takes. "
                "Clear them to add others."
            )
        candidates, problems = read_uploads(files, dataclasses.replace(limits, max_images=room))
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="llm-lab-clip-")
        taken = set(self.paths())
        added, notes = 0, []
        for name, data in candidates:
            try:
                prepared = prepare_image(data, name)
            except BadImage as error:
                problems.append(str(error))
                continue
            notes += prepared.notes
            image_id = _unique_id(name, taken)
            taken.add(image_id)
            # Kept as the JPEG that every later use reads, so its pixels (and hash) stay the same.
            path = Path(self.folder) / f"{len(self.uploads):04d}.jpg"
            prepared.image.save(path, "JPEG", quality=92)
            self.uploads.append((image_id, str(path)))
            added += 1
        return Added(added, problems, notes)

    def delete(self) -> None:
        """Remove this reader's files (the app calls it when the session ends or they clear their images)."""
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.folder, self.uploads, self.index, self.index_of, self.results = None, [], None, None, []


def gallery_paths(gallery: Gallery | None) -> dict[str, str]:
    """Every image a reader can see, id → file (the default gallery alone for ``None``)."""
    if gallery is not None:
        return gallery.paths()
    return {name: str(path) for name, path in default_gallery()}


def _unique_id(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        stem, suffix = os.path.splitext(name)
        candidate, number = f"{stem} ({number}){suffix}", number + 1
    return candidate


class Galleries:
    """What every reader shares, built once per model and safe to use from several threads.

    - :meth:`model`: a CLIP described by :func:`lab.clip.load`, per name (the weights stay in the lab's model
      cache, which may evict and reload them; this keeps only the description);
    - :meth:`default_index`: the default gallery embedded with a model (above ``LAB_CLIP_APPROX_ABOVE`` images
      saved beside its embeddings and memory-mapped, see :func:`stored_index`);
    - :meth:`index`: the default gallery plus one reader's :class:`Gallery`.

    :meth:`clear` forgets both, e.g. after the models behind the names have changed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str | None], ClipModel] = {}
        self._indexes: dict[str, ImageIndex] = {}  # by ClipModel.key

    def model(self, name: str) -> ClipModel:
        """The CLIP called ``name`` (an id or a folder), loaded and described once.

        Raises:
            ModelUnavailable: the weights are not here; the message says how to get them.
        """
        key = parse_name(name)
        with self._lock:
            if key not in self._models:
                self._models[key] = load(name)
            return self._models[key]

    def default_index(self, model: ClipModel) -> ImageIndex:
        """The default gallery embedded with ``model``; the first caller builds it, the others wait."""
        with self._lock:
            if model.key not in self._indexes:
                self._indexes[model.key] = stored_index(default_gallery(), model)
            return self._indexes[model.key]

    def index(self, gallery: Gallery | None, model: ClipModel) -> ImageIndex:
        """The default gallery plus the reader's own images; only theirs are embedded here (once)."""
        base = self.default_index(model)
        if gallery is None or not gallery.uploads:
            return base
        if not _up_to_date(gallery, model):
            gallery.index = base.extend(gallery.uploads)
            gallery.index_of = (model.key, len(gallery.uploads))
        return gallery.index

    def built(self, name: str, gallery: Gallery | None) -> bool:
        """Whether :meth:`model` and :meth:`index` would answer at once, without running a model: a text
        search can then send only its query to the model queue, batched with other readers'."""
        with self._lock:
            model = self._models.get(parse_name(name))
            if model is None or model.key not in self._indexes:
                return False
        return gallery is None or not gallery.uploads or _up_to_date(gallery, model)

    def clear(self) -> None:
        """Forget every described model and default index (they are built again on next use)."""
        with self._lock:
            self._models.clear()
            self._indexes.clear()


def _up_to_date(gallery: Gallery, model: ClipModel) -> bool:
    """Whether the reader's index holds all of their images, embedded with ``model``."""
    return gallery.index is not None and gallery.index_of == (model.key, len(gallery.uploads))


def gallery_fingerprint(files: Sequence[tuple[str, Path]]) -> str:
    """A name for a gallery of files that changes when an id, a path, a size or a modification time does."""
    digest = hashlib.sha256()
    for image_id, path in files:
        stat = os.stat(path)
        digest.update(f"{image_id}\0{os.fspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def stored_index(files: Sequence[tuple[str, Path]], model: ClipModel) -> ImageIndex:
    """The index of a gallery of files; above :func:`approx_above` images, kept on disk between runs.

    A big gallery's index (vectors, ids and faiss codes) is saved beside its embeddings, under
    ``LAB_CACHE_DIR/clip-embeddings/<model>/indexes/<fingerprint>``, and loaded memory-mapped: the next start
    neither opens a million images again nor holds their vectors in memory. A changed gallery gets a new
    fingerprint; the indexes of its older versions are removed. Small galleries are simply built.
    """
    if len(files) <= approx_above():
        return ImageIndex.build(files, model)
    indexes = EmbeddingStore(model.key).folder / "indexes"
    folder = indexes / gallery_fingerprint(files)
    if (folder / "index.json").is_file():
        return ImageIndex.load(folder, model)
    built = ImageIndex.build(files, model)
    built.save(folder)
    for older in indexes.iterdir():  # a process still mapping one keeps reading it: unlinked files live on
        if older.is_dir() and older != folder:
            shutil.rmtree(older, ignore_errors=True)
    stored = ImageIndex.load(folder, model)  # the mapped copy: the built vectors leave memory
    stored.computed = built.computed
    return stored
