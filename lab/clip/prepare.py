"""The *prepare* step: images opened safely and bounded, texts checked, before any model sees them.

Plain Python and PIL: no model, no GPU. The hash of an image's pixels names its embedding on disk, so
the same picture as a PNG path, as bytes or as a PIL image shares one cached embedding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from lab.errors import InputError
from lab.images import open_image

ImageSource = str | Path | bytes | Image.Image

MAX_SIDE = 1024  # larger images are shrunk first: CLIP sees 224 pixels, and memory is shared
MAX_ASPECT = 4.0  # CLIP looks at the centre square; a 4000×2 strip would blow up when resized to 224 high
MAX_QUERY_CHARS = 1_000  # CLIP reads 77 tokens at most; far longer text is a mistake, not a query


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


def check_query(query: str) -> str:
    """A search text, stripped; empty or absurdly long text is refused with a message.

    Raises:
        InputError: the text is empty, or longer than :data:`MAX_QUERY_CHARS`.
    """
    text = (query or "").strip()
    if not text:
        raise InputError("Type what to search for, e.g. “a cat” or “a rocket launch”.")
    if len(text) > MAX_QUERY_CHARS:
        raise InputError(
            f"The query has {len(text):,} characters; CLIP reads at most 77 tokens (about 60 words), "
            f"so the lab takes at most {MAX_QUERY_CHARS:,} characters."
        )
    return text
