"""CLIP (chapter 9): images and texts in one vector space, compared by cosine similarity.

The book embeds three images and their captions with CLIP and compares them; this package does the same for
a whole gallery, with open_clip as the engine::

    from lab import clip

    model = clip.load()  # ViT-B-32 trained on LAION-2B, through the lab's model cache
    index = clip.ImageIndex.build(clip.default_gallery(), model)
    index.search_text("a cat", k=3)  # [("chelsea.jpg", 0.29), ...]
    clip.zero_shot("assets/book/images/puppy.png", ["puppy", "cat", "car"], model)  # {"puppy": 0.98, ...}
    clip.similarity_matrix(images, captions, model)  # (len(images), len(captions)) cosines

Each operation is split in three: *prepare* (:mod:`~lab.clip.prepare`: open and check the image, hash its
pixels, check the text: plain Python), *forward* (the two towers in :mod:`~lab.clip.model`, the only code
that touches the model) and *present* (numbers back as numpy and Python values; pictures of them in
:mod:`~lab.clip.view`). The modules:

- :mod:`~lab.clip.model`: load and describe a CLIP, its forward steps, and what its towers read;
- :mod:`~lab.clip.prepare`: images and texts checked before any model sees them;
- :mod:`~lab.clip.index`: embeddings on disk and the searchable :class:`ImageIndex` (saved and memory-mapped);
- :mod:`~lab.clip.approximate`: faiss codes: approximate search above ``LAB_CLIP_APPROX_ABOVE`` images;
- :mod:`~lab.clip.zero_shot`: zero-shot labels and the book's similarity matrix;
- :mod:`~lab.clip.uploads`: reading uploads of files and zips within caps;
- :mod:`~lab.clip.gallery`: a reader's own :class:`Gallery` and the shared :class:`Galleries`;
- :mod:`~lab.clip.view`: HTML and markdown for the page.
"""

from __future__ import annotations

from lab.clip.approximate import APPROX_ABOVE, FaissMissing, approx_above, faiss_index
from lab.clip.gallery import Added, Galleries, Gallery, gallery_paths
from lab.clip.index import (
    BOOK_CAPTIONS,
    BOOK_IMAGES,
    EXACT_LIMIT,
    GALLERY_DIR,
    GALLERY_SUFFIXES,
    EmbeddingStore,
    EmptyGallery,
    ImageIndex,
    default_gallery,
    image_vector,
)
from lab.clip.model import (
    BOOK_MODEL,
    CLIP_SPECIALS,
    DEFAULT_MODEL,
    MODELS,
    SMALL_MODEL,
    ClipModel,
    ClipTokens,
    TextQuery,
    chosen_model,
    clip_tokens,
    embed_queries,
    load,
    parse_name,
    preprocessed_image,
)
from lab.clip.prepare import (
    MAX_ASPECT,
    MAX_QUERY_CHARS,
    MAX_SIDE,
    ImageSource,
    PreparedImage,
    check_query,
    prepare_image,
)
from lab.clip.uploads import UploadLimits, encode_jpeg, read_uploads
from lab.clip.zero_shot import (
    MAX_LABELS,
    TEMPLATE,
    ZeroShot,
    check_labels,
    check_template,
    classify,
    clip_probabilities,
    similarity_matrix,
    zero_shot,
)

__all__ = [
    # model
    "BOOK_MODEL",
    "CLIP_SPECIALS",
    "DEFAULT_MODEL",
    "MODELS",
    "SMALL_MODEL",
    "ClipModel",
    "ClipTokens",
    "TextQuery",
    "chosen_model",
    "clip_tokens",
    "embed_queries",
    "load",
    "parse_name",
    "preprocessed_image",
    # prepare
    "MAX_ASPECT",
    "MAX_QUERY_CHARS",
    "MAX_SIDE",
    "ImageSource",
    "PreparedImage",
    "check_query",
    "prepare_image",
    # index
    "BOOK_CAPTIONS",
    "BOOK_IMAGES",
    "EXACT_LIMIT",
    "GALLERY_DIR",
    "GALLERY_SUFFIXES",
    "EmbeddingStore",
    "EmptyGallery",
    "ImageIndex",
    "default_gallery",
    "image_vector",
    # approximate
    "APPROX_ABOVE",
    "FaissMissing",
    "approx_above",
    "faiss_index",
    # zero_shot
    "MAX_LABELS",
    "TEMPLATE",
    "ZeroShot",
    "check_labels",
    "check_template",
    "classify",
    "clip_probabilities",
    "similarity_matrix",
    "zero_shot",
    # uploads
    "UploadLimits",
    "encode_jpeg",
    "read_uploads",
    # gallery
    "Added",
    "Galleries",
    "Gallery",
    "gallery_paths",
]
