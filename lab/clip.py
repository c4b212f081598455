"""CLIP (chapter 9): images and texts in one vector space, compared by cosine similarity.

The book embeds three images and their captions with CLIP and compares them; this module does the same for
a whole gallery, with open_clip as the engine::

    from lab import clip

    model = clip.load()  # ViT-B-32 trained on LAION-2B, through the lab's model cache
    index = clip.ImageIndex.build(clip.default_gallery(), model)
    index.search_text("a cat", k=3)  # [("chelsea.jpg", 0.29), ...]
    clip.zero_shot("assets/book/images/puppy.png", ["puppy", "cat", "car"], model)  # {"puppy": 0.98, ...}
    clip.similarity_matrix(images, captions, model)  # (len(images), len(captions)) cosines

Each operation is split in three: *prepare* (open and check the image, hash its pixels, tokenize: plain
Python), *forward* (:func:`_forward_images` and :func:`_forward_texts`, the only code that touches the
model) and *present* (numbers back as numpy and Python values). Image embeddings are kept on disk under
``LAB_CACHE_DIR/clip-embeddings/<model>/``, keyed by the image's pixels, so a restart or a second user does
not compute them again. Search is exact cosine (one matrix product) up to :data:`EXACT_LIMIT` images; above
that, an approximate faiss index is used when ``faiss-cpu`` is installed.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from lab import catalog, config, device, models
from lab.cache import oom_guard
from lab.errors import InputError
from lab.images import BadImage, open_image

if TYPE_CHECKING:
    import torch

ASSETS = Path(__file__).resolve().parent.parent / "assets"
GALLERY_DIR = ASSETS / "gallery"
BOOK_IMAGES = ASSETS / "book" / "images"

DEFAULT_MODEL = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
BOOK_MODEL = "openai/clip-vit-base-patch32"
SMALL_MODEL = "timm/MobileCLIP2-S0-OpenCLIP"
MODELS = (DEFAULT_MODEL, BOOK_MODEL, SMALL_MODEL)

TEMPLATE = "a photo of a {}."
# The book's captions of its three images (chapter 9), in the order of its similarity matrix.
BOOK_CAPTIONS = {
    "puppy.png": "a puppy playing in the snow",
    "cat.png": "a pixelated image of a cute cat",
    "car.png": "A supercar on the road with the sunset in the background",
}

EXACT_LIMIT = 100_000  # exact search (n × d matrix product) stays in milliseconds up to here
MAX_SIDE = 1024  # larger images are shrunk first: CLIP sees 224 pixels, and memory is shared
MAX_ASPECT = 4.0  # CLIP looks at the centre square; a 4000×2 strip would blow up when resized to 224 high
MAX_LABELS = 100
MAX_QUERY_CHARS = 1_000  # CLIP reads 77 tokens at most; far longer text is a mistake, not a query
GALLERY_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}

ImageSource = str | Path | bytes | Image.Image


# -- models ----------------------------------------------------------------------------------------


def parse_name(name_or_path: str | Path) -> tuple[str, str | None]:
    """``(model id, folder or None)`` for a catalog or Hub id, ``hf-hub:<id>``, ``local-dir:<folder>``
    or a folder path."""
    text = str(name_or_path).strip()
    if not text:
        raise ValueError("Choose a CLIP model, or give the folder of one.")
    if text.startswith("hf-hub:"):
        return text.removeprefix("hf-hub:"), None
    folder = text.removeprefix("local-dir:") if text.startswith("local-dir:") else None
    if folder is None and (text.startswith(("/", "~", ".")) or Path(text).expanduser().is_dir()):
        folder = text
    if folder is None:
        return text, None
    resolved = str(Path(folder).expanduser())
    return resolved, resolved


@dataclass(frozen=True)
class ClipModel:
    """A loaded CLIP, by name: each use leases it from the lab's model cache (so it may be evicted between
    uses and loads again when needed)."""

    name: str  # catalog or Hub id, or the folder it was loaded from
    path: str | None
    title: str
    source: str  # where the weights came from, for people
    embed_dim: int
    image_size: int
    context_length: int
    logit_scale: float  # CLIP's learned temperature: logits = logit_scale × cosine
    key: str  # names these weights on this device and dtype: the folder of their embeddings on disk
    device: str
    dtype: str
    device_name: str | None = None

    def lease(self) -> AbstractContextManager[models.OpenClip]:
        """Hold the model (with its tokenizer and image transform) for a ``with`` block."""
        return models.clip_model(self.name, self.path, device_name=self.device_name)

    @property
    def batch_size(self) -> int:
        return 64 if self.device.startswith("cuda") else 16

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit-length embeddings of RGB images, ``(len(images), embed_dim)`` float32, in batches."""
        import torch

        out = []
        with self.lease() as clip:
            for start in range(0, len(images), self.batch_size):
                batch = images[start : start + self.batch_size]
                pixels = torch.stack([clip.inputs.preprocess(image) for image in batch])  # (B, 3, H, W)
                out.append(_forward_images(clip, pixels))
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of texts, ``(len(texts), embed_dim)`` float32."""
        with self.lease() as clip:
            return _forward_texts(clip, clip.inputs.tokenizer(list(texts)))  # ids: (n, context_length)


def load(name_or_path: str | Path = DEFAULT_MODEL, *, device_name: str | None = None) -> ClipModel:
    """Load a CLIP through the lab's cache (once per process) and describe it.

    Args:
        name_or_path: a catalog id (:data:`MODELS`), any Hub id of an open_clip model (``hf-hub:`` optional),
            or a folder in open_clip's Hub format or transformers' CLIP format.
        device_name: override the lab's device choice.

    Raises:
        ModelUnavailable: the weights are not here; the message says how to get them.
    """
    name, path = parse_name(name_or_path)
    with models.clip_model(name, path, device_name=device_name) as clip:
        probe = _forward_texts(clip, clip.inputs.tokenizer([""]))  # (1, embed_dim)
        size = clip.inputs.preprocess_cfg["size"]
        fingerprint = f"{clip.identity}|{clip.device}|{clip.dtype}"
        return ClipModel(
            name=name,
            path=path,
            title=catalog.entry(name).title if catalog.is_known(name) else f"folder {name}" if path else name,
            source=models.source_of(name, "model", path).detail,
            embed_dim=int(probe.shape[1]),
            image_size=int(size if isinstance(size, int) else size[0]),
            context_length=int(clip.inputs.tokenizer.context_length),
            # CLIP clamps its temperature at 100 during training; a checkpoint may hold a larger value.
            logit_scale=float(min(clip.net.logit_scale.exp().item(), 100.0)),
            key=hashlib.sha256(fingerprint.encode()).hexdigest()[:20],
            device=clip.device,
            dtype=str(clip.dtype).removeprefix("torch."),
            device_name=device_name,
        )


@device.gpu_function(duration=60)
def _forward_images(clip: models.OpenClip, pixels: torch.Tensor) -> np.ndarray:
    """The vision tower: ``(B, 3, H, W)`` pixels → ``(B, embed_dim)`` unit vectors."""
    import torch

    with oom_guard("embedding images"), torch.inference_mode():
        features = clip.net.encode_image(pixels.to(clip.device, clip.dtype))  # (B, D)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


@device.gpu_function(duration=30)
def _forward_texts(clip: models.OpenClip, ids: torch.Tensor) -> np.ndarray:
    """The text tower: ``(n, context_length)`` token ids → ``(n, embed_dim)`` unit vectors."""
    import torch

    with oom_guard("embedding texts"), torch.inference_mode():
        features = clip.net.encode_text(ids.to(clip.device))  # (n, D)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


# -- images ----------------------------------------------------------------------------------------


@dataclass
class PreparedImage:
    """An image ready for CLIP: 8-bit RGB, at most :data:`MAX_SIDE` pixels, and the hash of its pixels."""

    id: str
    image: Image.Image
    digest: str
    notes: list[str] = field(default_factory=list)


def prepare_image(source: ImageSource, name: str | None = None) -> PreparedImage:
    """Open ``source`` safely (:func:`lab.images.open_image`), bound its size, and hash its pixels.

    The hash is of the pixels CLIP will see, not of the file, so the same picture as a PNG path, as bytes
    or as a PIL image shares one cached embedding.

    Raises:
        BadImage: not an image, truncated, or over the pixel cap; the message names it.
    """
    opened = open_image(source, name)
    image, notes, label = opened.image, list(opened.notes), opened.name
    width, height = image.size
    if max(width, height) > MAX_ASPECT * min(width, height):
        # CLIP resizes the short side to 224 and keeps the centre: cut the strip to that centre first.
        keep_w = min(width, int(height * MAX_ASPECT))
        keep_h = min(height, int(width * MAX_ASPECT))
        left, top = (width - keep_w) // 2, (height - keep_h) // 2
        image = image.crop((left, top, left + keep_w, top + keep_h))
        notes.append(
            f"{label} is {width}×{height} pixels; CLIP only looks at its centre, so the middle "
            f"{keep_w}×{keep_h} is used."
        )
    if max(image.size) > MAX_SIDE:
        image = image.copy()  # thumbnail() works in place, and the caller's image is not ours to change
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if min(width, height) < 16:
        notes.append(f"{label} is only {width}×{height} pixels: CLIP will see it blown up and blurred.")
    digest = hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()
    return PreparedImage(label, image, digest, notes)


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


def _vectors_of(prepared: Sequence[PreparedImage], model: ClipModel) -> tuple[np.ndarray, int]:
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


def _named(images: Sequence[Any] | Mapping[str, ImageSource]) -> list[tuple[str, ImageSource]]:
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
        raise ValueError(
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

    Build with :meth:`build`. ``problems`` lists the images that could not be used (the others are
    indexed), ``notes`` what was done to the rest (converted, cropped), ``computed`` how many embeddings
    were computed rather than read from disk.
    """

    ids: list[str]
    vectors: np.ndarray  # (n, embed_dim) float32, unit rows
    model: ClipModel | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    computed: int = 0
    backend: Literal["auto", "exact", "faiss"] = "auto"
    _approximate: Any = field(default=None, repr=False)

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
            backend: ``"exact"`` cosine by matrix product, ``"faiss"`` (needs ``faiss-cpu``), or ``"auto"``:
                faiss only above :data:`EXACT_LIMIT` images, when installed.

        Raises:
            EmptyGallery: no image could be used (the message lists why).
        """
        from tqdm.auto import tqdm

        pairs = _named(images)
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
                vectors, fresh = _vectors_of(prepared, model)
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
        """A new index holding this one's images and ``images`` (this one is not changed)."""
        added = ImageIndex.build(images, self._model(), backend=self.backend)
        clash = sorted(set(self.ids) & set(added.ids))
        if clash:
            raise ValueError(f"The gallery already has an image called {', '.join(clash)}.")
        return ImageIndex(
            self.ids + added.ids,
            np.concatenate([self.vectors, added.vectors]),
            self.model,
            added.problems,
            added.notes,
            added.computed,
            self.backend,
        )

    def _model(self) -> ClipModel:
        if self.model is None:
            raise ValueError("This index was built from vectors alone; give it a model to embed queries.")
        return self.model

    # -- queries -------------------------------------------------------------------------------------
    def text_scores(self, query: str) -> np.ndarray:
        """Cosine similarity of every indexed image to a text, ``(n,)``."""
        return self.vectors @ self._model().embed_texts([check_query(query)])[0]

    def image_scores(self, image: ImageSource) -> np.ndarray:
        """Cosine similarity of every indexed image to an image, ``(n,)``."""
        return self.vectors @ image_vector(image, self._model())

    def search_text(self, query: str, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` images closest to a text: ``[(id, cosine), ...]``, best first."""
        return self.search_vector(self._model().embed_texts([check_query(query)])[0], k)

    def search_image(self, image: ImageSource, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` images closest to an image (an indexed image itself comes first, at cosine 1)."""
        return self.search_vector(image_vector(image, self._model()), k)

    def search_vector(self, query: np.ndarray, k: int = 8) -> list[tuple[str, float]]:
        """The ``k`` images closest to a unit vector, best first."""
        if k < 1:
            raise ValueError("Ask for at least one result (k ≥ 1).")
        k = min(k, len(self.ids))
        if self._uses_faiss():
            scores, rows = self._faiss().search(query.astype(np.float32)[None, :], k)  # (1, k) each
            return [(self.ids[r], float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
        return self.top(self.vectors @ query, k)

    def top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` highest of ``scores`` (one per image) as ``[(id, score), ...]``, best first."""
        k = max(1, min(k, len(scores)))
        # argpartition finds the k best in O(n); only those k are then sorted.
        rows = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        return [(self.ids[r], float(scores[r])) for r in rows]

    def _uses_faiss(self) -> bool:
        if self.backend == "exact":
            return False
        if self.backend == "faiss":
            return True
        return len(self.ids) > EXACT_LIMIT and _faiss_installed()

    def _faiss(self) -> Any:
        if self._approximate is None:
            self._approximate = faiss_index(self.vectors)
        return self._approximate


def _faiss_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def faiss_index(vectors: np.ndarray) -> Any:
    """An HNSW graph over unit vectors with inner-product scores (= cosine); needs ``faiss-cpu``."""
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "Approximate search over very large galleries needs faiss: pip install faiss-cpu"
        ) from None
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 128  # recall over speed: a gallery search is one query at a time
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def image_vector(image: ImageSource, model: ClipModel, name: str = "the query image") -> np.ndarray:
    """The unit embedding of one image (from disk if this image was embedded before)."""
    vectors, _ = _vectors_of([prepare_image(image, name)], model)
    return vectors[0]


def check_query(query: str) -> str:
    """A search text, stripped; empty or absurdly long text is refused with a message."""
    text = (query or "").strip()
    if not text:
        raise ValueError("Type what to search for, e.g. “a cat” or “a rocket launch”.")
    if len(text) > MAX_QUERY_CHARS:
        raise ValueError(
            f"The query has {len(text):,} characters; CLIP reads at most 77 tokens (about 60 words), "
            f"so the lab takes at most {MAX_QUERY_CHARS:,} characters."
        )
    return text


# -- zero-shot classification and the similarity matrix -----------------------------------------------


def check_labels(labels: Sequence[str] | str) -> list[str]:
    """Labels, stripped: a list, or one string with a label per line (or comma-separated).

    Raises:
        ValueError: no label, a label given twice, or more than :data:`MAX_LABELS`.
    """
    if isinstance(labels, str):
        labels = labels.splitlines() if "\n" in labels else labels.split(",")
    clean = [label.strip() for label in labels if label and label.strip()]
    if not clean:
        raise ValueError("Give at least one label to choose from, e.g. “cat, dog, car”.")
    seen: set[str] = set()
    repeated = sorted({label for label in clean if label.casefold() in seen or seen.add(label.casefold())})
    if repeated:
        raise ValueError(f"Each label must be different; {', '.join(repeated)} appears more than once.")
    if len(clean) > MAX_LABELS:
        raise ValueError(f"{len(clean)} labels given; the lab takes at most {MAX_LABELS}.")
    for label in clean:
        check_query(label)
    return clean


def check_template(template: str | None) -> str:
    """A prompt template with one ``{}`` (or ``{label}``) where the label goes."""
    text = (template or "").strip().replace("{label}", "{}")
    if text.count("{}") != 1:
        raise ValueError(
            f"The template needs exactly one {{}} where the label goes, like “{TEMPLATE}”; got “{text}”."
        )
    return text


@dataclass(frozen=True)
class ZeroShot:
    """A zero-shot classification: per label, the prompt, its cosine with the image and its probability."""

    labels: list[str]
    prompts: list[str]
    cosines: list[float]
    probabilities: list[float]  # softmax(logit_scale × cosine): sums to 1
    logit_scale: float

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities))


def classify(
    image: ImageSource, labels: Sequence[str] | str, model: ClipModel, template: str = TEMPLATE
) -> ZeroShot:
    """Zero-shot classification with every number shown (see :func:`zero_shot`)."""
    labels = check_labels(labels)
    template = check_template(template)
    prompts = [template.replace("{}", label) for label in labels]
    cosines = model.embed_texts(prompts) @ image_vector(image, model, "the image")  # (labels,)
    logits = model.logit_scale * cosines.astype(np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    return ZeroShot(labels, prompts, cosines.tolist(), probabilities.tolist(), model.logit_scale)


def zero_shot(
    image: ImageSource, labels: Sequence[str] | str, model: ClipModel, template: str = TEMPLATE
) -> dict[str, float]:
    """Which label fits the image: ``{label: probability}``, summing to 1.

    Each label is put into ``template`` ("a photo of a {}."), embedded, and compared with the image; the
    cosines times the model's logit scale go through a softmax, as CLIP was trained.
    """
    return classify(image, labels, model, template).as_dict()


def similarity_matrix(images: Sequence[Any], texts: Sequence[str], model: ClipModel) -> np.ndarray:
    """The book's table: cosine similarity of every image with every text, ``(len(images), len(texts))``."""
    texts = [check_query(text) for text in texts]
    if not texts:
        raise ValueError("Give at least one caption.")
    pairs = _named(images)
    if not pairs:
        raise ValueError("Choose at least one image.")
    vectors, _ = _vectors_of([prepare_image(source, name) for name, source in pairs], model)
    return vectors @ model.embed_texts(texts).T


# -- under the hood --------------------------------------------------------------------------------


# open_clip renamed CLIP's two special tokens; OpenAI's vocabulary (and the book, through transformers)
# calls them this, with the same ids (49406, 49407).
CLIP_SPECIALS = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


@dataclass(frozen=True)
class ClipTokens:
    """What CLIP's text tower reads: tokens (words end in ``</w>``) and their ids, start and end included."""

    tokens: list[str]
    ids: list[int]
    truncated: bool  # the text was longer than the context and was cut
    context_length: int


def _inputs(model: ClipModel | str, path: str | None = None) -> models.ClipInputs:
    if isinstance(model, ClipModel):
        return models.clip_inputs(model.name, model.path)
    name, folder = parse_name(model)
    return models.clip_inputs(name, path or folder)


def clip_tokens(text: str, model: ClipModel | str = DEFAULT_MODEL) -> ClipTokens:
    """CLIP's tokens of a text. Needs only the tokenizer, so it works for catalog models without weights."""
    tokenizer = _inputs(model).tokenizer
    ids = [int(i) for i in tokenizer([text])[0].tolist()]  # (context_length,), 0-padded after the end token
    end = getattr(tokenizer, "eot_token_id", None)
    used = ids[: ids.index(end) + 1] if end in ids else [i for i in ids if i]
    if hasattr(tokenizer, "decoder"):  # open_clip's CLIP BPE
        tokens = [CLIP_SPECIALS.get(tokenizer.decoder[i], tokenizer.decoder[i]) for i in used]
        truncated = len(tokenizer.encode(text)) + 2 > len(ids)
    else:  # a Hugging Face tokenizer (SigLIP and others)
        tokens = tokenizer.tokenizer.convert_ids_to_tokens(used)
        truncated = len(used) == len(ids)
    return ClipTokens(tokens, used, truncated, len(ids))


def preprocessed_image(image: ImageSource, model: ClipModel | str = DEFAULT_MODEL) -> Image.Image:
    """The image as the vision tower sees it: resized, centre-cropped (224×224 for ViT-B/32), with the
    normalisation undone so that it can be shown. Needs no weights for catalog models."""
    inputs = _inputs(model)
    tensor = inputs.preprocess(prepare_image(image, "the image").image)  # (3, H, W), normalised
    mean = np.asarray(inputs.preprocess_cfg["mean"], np.float32)[:, None, None]
    std = np.asarray(inputs.preprocess_cfg["std"], np.float32)[:, None, None]
    pixels = np.clip((tensor.numpy() * std + mean) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels.transpose(1, 2, 0))


# -- uploads ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one upload of images (several files, or zips of them). Pixels are capped by lab.images."""

    max_images: int = 100
    max_bytes: int = 200 * 2**20  # all images of the upload together, zips counted unpacked
    max_file_bytes: int = 20 * 2**20  # one image

    @classmethod
    def from_env(cls) -> UploadLimits:
        """``LAB_CLIP_MAX_IMAGES`` and ``LAB_CLIP_MAX_UPLOAD_MB`` override the defaults."""
        return cls(
            max_images=int(os.environ.get("LAB_CLIP_MAX_IMAGES", cls.max_images)),
            max_bytes=int(float(os.environ.get("LAB_CLIP_MAX_UPLOAD_MB", cls.max_bytes / 2**20)) * 2**20),
        )


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def read_uploads(
    files: Sequence[str | Path], limits: UploadLimits | None = None
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """The candidate images of an upload, as ``(name, bytes)``, within ``limits``; and what was refused.

    Zips are opened and their files taken one by one (folders, hidden files and ``__MACOSX`` skipped);
    each member is read at most one byte past the cap, so a zip that lies about its sizes cannot fill the
    memory. Whether each file really is an image is checked later, by :func:`prepare_image`.
    """
    limits = limits or UploadLimits()
    taken: list[tuple[str, bytes]] = []
    problems: list[str] = []
    total = 0
    refused = 0

    def candidates() -> Iterator[tuple[str, Any]]:
        for file in files:
            path = Path(file)
            if zipfile.is_zipfile(path):
                yield from _zip_members(path, problems)
            elif path.suffix.lower() == ".zip":
                problems.append(f"{path.name} is not a zip file the lab can read (damaged, or cut short).")
            else:
                yield path.name, path

    for name, where in candidates():
        if len(taken) >= limits.max_images:
            refused += 1
            continue
        try:
            data = _read_capped(where, limits.max_file_bytes)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError):
            problems.append(f"{name} could not be unpacked (damaged, or a compression the lab cannot read).")
            continue
        if data is None:
            problems.append(
                f"{name} is over {_megabytes(limits.max_file_bytes)}; each image may be at most that."
            )
            continue
        if total + len(data) > limits.max_bytes:
            problems.append(
                f"{name} was not added: the upload would hold more than "
                f"{_megabytes(limits.max_bytes)} of images."
            )
            continue
        total += len(data)
        taken.append((name, data))
    if refused:
        problems.append(
            f"The gallery takes {limits.max_images} more images at most; the last {refused} were not added."
        )
    return taken, problems


def _zip_members(path: Path, problems: list[str]) -> Iterator[tuple[str, Any]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        problems.append(f"{path.name} is not a zip file the lab can read.")
        return
    with archive:
        for member in archive.infolist():
            base = Path(member.filename).name
            if member.is_dir() or member.filename.startswith("__MACOSX/") or base.startswith("."):
                continue
            if member.flag_bits & 0x1:
                problems.append(f"{member.filename} in {path.name} is encrypted; the lab cannot open it.")
                continue
            yield member.filename, (archive, member)


def _read_capped(where: Any, cap: int) -> bytes | None:
    """The bytes of a path or zip member, or None when there are more than ``cap``."""
    if isinstance(where, Path):
        return None if where.stat().st_size > cap else where.read_bytes()
    archive, member = where
    with archive.open(member) as handle:
        data = handle.read(cap + 1)  # the header's size may lie: never read more than one past the cap
    return None if len(data) > cap else data


def encode_jpeg(image: Image.Image, quality: int = 92) -> bytes:
    """An RGB image as JPEG bytes (how the tab keeps uploads: small, and hashed as they will be read)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
