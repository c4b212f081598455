"""The ``clip`` section: CLIP indexing and search, each against a naive baseline measured in the same run.

- indexing: images per second through :meth:`lab.clip.ImageIndex.build` (open, hash, batched forward on
  the lab's device and dtype, normalise, store) against a loop that embeds one image at a time, with
  ViT-B-32: its real weights where they are available here, else open_clip's random initialisation of the
  same architecture (speed does not depend on the values of the weights);
- search: milliseconds per query over 1k, 10k and 100k synthetic unit vectors (512-d, as ViT-B-32's),
  exact cosine by one matrix product and a partial sort, against a Python loop over the images;
- a text query's embedding (the text tower), which every text search adds to the search itself.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Row, Section
from bench.timing import median_ms, timed

TITLE = "CLIP search"
QUERY_TARGET_MS = {"10k": 20.0}
DIM = 512


def random_vit_b_32() -> Path:
    """A ViT-B-32 with open_clip's random initialisation, in open_clip's Hub format (written once)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from lab import config

    folder = config.cache_dir() / "bench" / "ViT-B-32-random-init"
    if not (folder / "open_clip_model.safetensors").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = open_clip.create_model("ViT-B-32", pretrained=None)
        model_cfg = open_clip.get_model_config("ViT-B-32")
        (folder / "open_clip_config.json").write_text(
            json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}})
        )
        tensors = {name: tensor.contiguous() for name, tensor in net.state_dict().items()}
        partial = folder / "weights.partial"
        save_file(tensors, str(partial))
        partial.rename(folder / "open_clip_model.safetensors")
    return folder


def bench_model() -> tuple[Any, str]:
    """The real default ViT-B-32 if it loads here, else the random one; and which it is."""
    from lab import clip
    from lab.catalog import ModelUnavailable

    try:
        return clip.load(clip.DEFAULT_MODEL), "ViT-B-32 (LAION-2B weights)"
    except ModelUnavailable:
        return clip.load(random_vit_b_32()), "ViT-B-32 (random init: no weights here)"


def distinct_images(count: int) -> list[tuple[str, Any]]:
    """``count`` different 320×320 images made from the default gallery (so none is a cache hit)."""
    from PIL import Image

    from lab import clip

    rng = np.random.default_rng(time.time_ns())  # new pixels every run and call: never a cache hit
    base = [Image.open(path).convert("RGB").resize((320, 320)) for _, path in clip.default_gallery()]
    images = []
    for number in range(count):
        pixels = np.asarray(base[number % len(base)]).copy()
        pixels[rng.integers(0, 320, 8), rng.integers(0, 320, 8)] = rng.integers(0, 255, (8, 3))
        images.append((f"image {number}", Image.fromarray(pixels)))
    return images


@contextmanager
def _scratch_cache() -> Iterator[None]:
    """Embeddings go to a temporary LAB_CACHE_DIR: the bench measures computing them, and leaves nothing."""
    previous = os.environ.get("LAB_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="lab-bench-clip-") as folder:
        os.environ["LAB_CACHE_DIR"] = folder
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("LAB_CACHE_DIR", None)
            else:
                os.environ["LAB_CACHE_DIR"] = previous


def _embed_one_at_a_time(model: Any, images: list[tuple[str, Any]]) -> None:
    """The book's way: one image per forward pass."""
    import torch

    for _, image in images:
        with model.lease() as loaded, torch.inference_mode():
            pixels = loaded.inputs.preprocess(image).unsqueeze(0).to(loaded.device, loaded.dtype)
            features = loaded.net.encode_image(pixels)
            (features / features.norm(dim=-1, keepdim=True)).float().cpu().numpy()


def indexing(model: Any, count: int) -> dict[str, float]:
    """Images per second: ImageIndex.build (batched) against one image at a time through the model."""
    from lab import clip

    images = distinct_images(count + 8)
    warm, images = images[:8], images[8:]
    with _scratch_cache():
        clip.ImageIndex.build(warm, model)  # first use: allocator, kernels and threads warm up here
        batched, index = timed(lambda: clip.ImageIndex.build(images, model))
    assert index.computed == count, "the bench must compute every embedding, not read them from disk"
    naive_count = max(4, count // 4)
    naive, _ = timed(lambda: _embed_one_at_a_time(model, images[:naive_count]))
    batched_rate, naive_rate = count / batched, naive_count / naive
    return {
        "clip_index_images": count,
        "clip_index_images_per_s": batched_rate,
        "clip_naive_images_per_s": naive_rate,
        "clip_index_speedup": batched_rate / naive_rate,
    }


def _naive_search(vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = [float(np.dot(row, query)) for row in vectors]
    return sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]


def _size_label(size: int) -> str:
    return f"{size // 1000}k"


def searching(sizes: list[int], repeats: int) -> dict[str, float]:
    """Milliseconds per query (k = 8) over synthetic unit vectors, exact, against a Python loop."""
    from lab import clip

    rng = np.random.default_rng(0)
    results: dict[str, float] = {}
    for size in sizes:
        label = _size_label(size)
        vectors = rng.standard_normal((size, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = clip.ImageIndex([str(i) for i in range(size)], vectors, backend="exact")
        queries = iter(vectors[rng.integers(0, size, repeats)])
        exact = median_ms(lambda index=index, queries=queries: index.search_vector(next(queries), 8), repeats)
        naive = median_ms(lambda v=vectors: _naive_search(v, v[0], 8), max(1, repeats // 20))
        results[f"clip_query_ms_{label}"] = exact
        results[f"clip_naive_query_ms_{label}"] = naive
        results[f"clip_query_speedup_{label}"] = naive / exact
    return results


def measure(quick: bool = False) -> dict[str, Any]:
    """Every figure of the section: indexing speed, query latency, and their baselines."""
    from lab import clip

    model, which = bench_model()
    results: dict[str, Any] = {"clip_model": which, "clip_device": model.device, "clip_dtype": model.dtype}
    on_gpu = model.device.startswith("cuda")
    count = (256 if on_gpu else 32) if quick else (2048 if on_gpu else 128)
    results.update(indexing(model, count))
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    results.update(searching(sizes, repeats=20 if quick else 100))
    model.embed_texts(["warm up"])
    words = iter(f"a photo of thing number {n}" for n in range(10_000))
    results["clip_text_encode_ms"] = median_ms(lambda: model.embed_texts([next(words)]), 5 if quick else 30)
    results["clip_approx_above"] = clip.approx_above()
    return results


def section(details: dict[str, Any]) -> Section:
    """The rows of :func:`measure`'s figures (only the search sizes it measured)."""
    rows = [
        Row(
            f"CLIP indexing, {details['clip_index_images']} images",
            details["clip_index_images_per_s"],
            "img/s",
            baseline=details["clip_naive_images_per_s"],
            note=f"{details['clip_model']} on {details['clip_device']} {details['clip_dtype']}; "
            "baseline: one image at a time",
            better="higher",
        ),
        Row("CLIP text query embedding", details["clip_text_encode_ms"], "ms"),
    ]
    for size in (1_000, 10_000, 100_000):
        label = _size_label(size)
        if f"clip_query_ms_{label}" not in details:
            continue
        rows.append(
            Row(
                f"CLIP search over {label} images (exact, k=8)",
                details[f"clip_query_ms_{label}"],
                "ms",
                baseline=details[f"clip_naive_query_ms_{label}"],
                note="baseline: a Python loop over the images",
                target=QUERY_TARGET_MS.get(label),
            )
        )
    return Section(TITLE, rows, details)


def run(quick: bool) -> Section:
    """Indexing (32 images on a CPU, 128 in full) and search over 1k and 10k vectors (and 100k in full)."""
    return section(measure(quick))
