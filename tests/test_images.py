"""Every awkward upload becomes an RGB image or a clear message (lab.images)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lab.images import BadImage, open_image, open_many

BOOK = "assets/book/images"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_the_books_images_open_as_rgb():
    for name in ("puppy.png", "cat.png", "car.png"):
        opened = open_image(f"{BOOK}/{name}")
        assert opened.image.mode == "RGB" and opened.name == name


def test_not_an_image_is_named():
    with pytest.raises(BadImage, match="notes.txt is not an image"):
        open_image(b"hello, I am text", "notes.txt")


def test_truncated_file_is_reported():
    data = encode(Image.new("RGB", (64, 64), "red"), "JPEG")[:200]
    with pytest.raises(BadImage, match="damaged or truncated"):
        open_image(data, "cut.jpg")


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setenv("LAB_MAX_IMAGE_PIXELS", "10000")
    data = encode(Image.new("L", (200, 200)), "PNG")
    with pytest.raises(BadImage, match=r"200×200 = 40,000 pixels; the lab accepts at most 10,000"):
        open_image(data, "bomb.png")


def test_cmyk_16bit_palette_alpha_and_grayscale_become_rgb_with_a_note():
    cmyk = open_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"), "cmyk.jpg")
    assert cmyk.image.mode == "RGB" and "CMYK" in cmyk.notes[0]
    ramp = Image.fromarray(np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16))
    sixteen = open_image(encode(ramp, "PNG"), "deep.png")
    assert sixteen.image.mode == "RGB" and "16-bit" in sixteen.notes[0]
    assert sixteen.image.getextrema()[0] == (0, 255)  # the range is rescaled, not clipped to white
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([255, 0, 0] * 256)
    palette.info["transparency"] = 0
    flat = open_image(encode(palette, "PNG", transparency=0), "clear.png")
    assert flat.image.getpixel((0, 0)) == (255, 255, 255)  # transparent pixels land on white
    assert open_image(encode(Image.new("L", (3, 3), 128), "PNG")).image.getpixel((1, 1)) == (128, 128, 128)


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("RGB", (10, 10), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    opened = open_image(buffer.getvalue(), "anim.gif")
    assert opened.image.getpixel((5, 5))[0] > 200 and "first frame" in opened.notes[0]


def test_one_pixel_and_very_wide_images_open():
    assert open_image(Image.new("RGB", (1, 1))).image.size == (1, 1)
    assert open_image(Image.new("RGB", (4000, 2))).image.size == (4000, 2)


def test_open_many_keeps_the_good_images_and_lists_the_bad():
    good = encode(Image.new("RGB", (5, 5)), "PNG")
    opened, problems = open_many([("a.png", good), ("b.txt", b"nope"), ("c.png", good)])
    assert [o.name for o in opened] == ["a.png", "c.png"]
    assert problems == ["b.txt is not an image the lab can read (PNG, JPEG, GIF, WebP, BMP, TIFF)."]
    opened, problems = open_many([("x.png", good)] * 3, max_count=2)
    assert len(opened) == 2 and "the last 1 were not opened" in problems[0]
