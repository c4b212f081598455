"""Uploads of images (several files, or zips of them), read within caps that protect a shared server.

Only the bytes are taken here; whether each file really is an image is checked later, by
:func:`lab.clip.prepare_image`.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image


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
