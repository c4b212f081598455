"""Open user images safely: one function for every tab that takes pictures.

Uploads arrive in every shape: not an image at all, truncated, a decompression bomb, CMYK, 16-bit, a
palette with transparency, an animated GIF. :func:`open_image` turns each into a plain 8-bit RGB
``PIL.Image`` or raises :class:`BadImage` with a message a reader understands; :func:`open_many` opens a
batch and keeps going past the bad ones.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from lab.errors import InputError


class BadImage(InputError):
    """An upload that cannot be used as an image; the message says why."""


def max_pixels() -> int:
    """Largest image accepted, in pixels (``LAB_MAX_IMAGE_PIXELS``, default 40 million: 8000 × 5000)."""
    return int(os.environ.get("LAB_MAX_IMAGE_PIXELS", "40000000"))


@dataclass
class OpenedImage:
    """An image ready for a model, with what was done to it on the way."""

    name: str
    image: Image.Image
    notes: list[str] = field(default_factory=list)


def _name_of(source: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return Path(source).name
    return "the image"


def open_image(source: str | Path | bytes | Image.Image, name: str | None = None) -> OpenedImage:
    """Open ``source`` as an 8-bit RGB image.

    Args:
        source: a path, the file's bytes, or a PIL image.
        name: what to call it in messages (defaults to the file name).

    Raises:
        BadImage: not an image, truncated, or over :func:`max_pixels`.
    """
    label = _name_of(source, name)
    notes: list[str] = []
    limit = max_pixels()
    if isinstance(source, Image.Image):
        image = source
    else:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(handle)
        except (
            UnidentifiedImageError,
            Image.DecompressionBombWarning,
            Image.DecompressionBombError,
        ) as error:
            if isinstance(error, UnidentifiedImageError):
                raise BadImage(
                    f"{label} is not an image the lab can read (PNG, JPEG, GIF, WebP, BMP, TIFF)."
                ) from None
            raise BadImage(f"{label} is too large to open safely (over {limit:,} pixels).") from None
        except (FileNotFoundError, IsADirectoryError) as error:
            raise BadImage(f"{label} could not be read: {error.strerror}.") from None
        except OSError as error:  # a header cut short
            raise BadImage(f"{label} is damaged or truncated ({error}).") from None
    width, height = image.size
    if width * height > limit:
        raise BadImage(
            f"{label} is {width}×{height} = {width * height:,} pixels; the lab accepts at most {limit:,}."
        )
    if width < 1 or height < 1:
        raise BadImage(f"{label} has no pixels.")
    if getattr(image, "is_animated", False):
        notes.append(f"{label} is animated: only its first frame is used.")
        image.seek(0)
    try:
        image.load()
    except OSError as error:
        raise BadImage(f"{label} is damaged or truncated ({error}).") from None
    image = ImageOps.exif_transpose(image)
    image, converted = _to_rgb(image)
    if converted:
        notes.append(f"{label} was {converted}; converted to 8-bit RGB.")
    return OpenedImage(label, image, notes)


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str]:
    """8-bit RGB, transparency flattened onto white; returns what the mode was, or "" if already RGB."""
    mode = image.mode
    if mode == "RGB":
        return image, ""
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: rescale the actual range to 0–255 rather than clip.
        values = image.convert("F")
        low, high = values.getextrema()
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = values.point(lambda v: (v - low) * scale).convert("L")
        return gray.convert("RGB"), f"{mode} ({'16-bit' if mode.startswith('I;16') else 'high bit depth'})"
    if mode == "P" and "transparency" in image.info or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), f"{mode} with transparency"
    described = {"CMYK": "CMYK", "L": "grayscale", "1": "black and white", "P": "a palette image"}.get(
        mode, mode
    )
    return image.convert("RGB"), described


def open_many(
    sources: list[tuple[str, str | Path | bytes | Image.Image]], max_count: int = 500
) -> tuple[list[OpenedImage], list[str]]:
    """Open a batch; bad files are reported and skipped, the good ones still come back.

    Args:
        sources: ``(name, source)`` pairs.
        max_count: at most this many images are opened; the rest are reported, not silently dropped.

    Returns:
        The opened images and one message per problem.
    """
    opened, problems = [], []
    if len(sources) > max_count:
        problems.append(
            f"{len(sources)} images given; the lab takes {max_count} at a time, "
            f"so the last {len(sources) - max_count} were not opened."
        )
        sources = sources[:max_count]
    for name, source in sources:
        try:
            opened.append(open_image(source, name))
        except BadImage as error:
            problems.append(str(error))
    return opened, problems
