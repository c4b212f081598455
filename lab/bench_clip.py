"""Measure CLIP search: ``python -m lab.bench_clip`` prints a table (``--json``: the same as JSON).

:func:`clip_bench` is the ``clip`` section of ``python -m lab.bench``. Every speed is reported next to a
naive baseline measured in the same run, as a ratio, so the numbers compare across machines:

- indexing: images per second through :meth:`lab.clip.ImageIndex.build` (open, hash, batched forward on
  the lab's device and dtype, normalise, store) against a loop that embeds one image at a time, with
  ViT-B-32: its real weights where they are available here, else open_clip's random initialisation of the
  same architecture (speed does not depend on the values of the weights);
- search: milliseconds per query over 1k, 10k and 100k synthetic unit vectors (512-d, as ViT-B-32's),
  exact cosine by one matrix product and a partial sort, against a Python loop over the images;
- a text query's embedding (the text tower), which every text search adds to the search itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {"clip_query_ms_10k": 20.0}
DIM = 512


def _median_ms(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


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


def indexing(model: Any, count: int) -> dict[str, float]:
    """Images per second: ImageIndex.build (batched) against one image at a time through the model."""
    import torch

    from lab import clip

    images = distinct_images(count + 8)
    warm, images = images[:8], images[8:]
    with _scratch_cache():
        clip.ImageIndex.build(warm, model)  # first use: allocator, kernels and threads warm up here
        started = time.perf_counter()
        index = clip.ImageIndex.build(images, model)
        batched = time.perf_counter() - started
    assert index.computed == count, "the bench must compute every embedding, not read them from disk"
    naive_count = max(4, count // 4)
    started = time.perf_counter()
    for _, image in images[:naive_count]:
        with model.lease() as loaded, torch.inference_mode():  # the book's way: one image per call
            pixels = loaded.inputs.preprocess(image).unsqueeze(0).to(loaded.device, loaded.dtype)
            features = loaded.net.encode_image(pixels)
            (features / features.norm(dim=-1, keepdim=True)).float().cpu().numpy()
    naive = time.perf_counter() - started
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


def searching(sizes: list[int], repeats: int) -> dict[str, float]:
    """Milliseconds per query (k = 8) over synthetic unit vectors, exact, against a Python loop."""
    rng = np.random.default_rng(0)
    results: dict[str, float] = {}
    for size in sizes:
        label = f"{size // 1000}k"
        exact, naive = _search_at(size, rng, repeats)
        results[f"clip_query_ms_{label}"] = exact
        results[f"clip_naive_query_ms_{label}"] = naive
        results[f"clip_query_speedup_{label}"] = naive / exact
    return results


def _search_at(size: int, rng: np.random.Generator, repeats: int) -> tuple[float, float]:
    from lab import clip

    vectors = rng.standard_normal((size, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = clip.ImageIndex([str(i) for i in range(size)], vectors, backend="exact")
    queries = iter(vectors[rng.integers(0, size, repeats)])
    exact = _median_ms(lambda: index.search_vector(next(queries), 8), repeats)
    naive = _median_ms(lambda: _naive_search(vectors, vectors[0], 8), max(1, repeats // 20))
    return exact, naive


def clip_bench(quick: bool = False) -> dict[str, Any]:
    """The ``clip`` section of ``python -m lab.bench``: indexing speed, query latency, and their baselines."""
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
    results["clip_text_encode_ms"] = _median_ms(lambda: model.embed_texts([next(words)]), 5 if quick else 30)
    results["clip_exact_limit"] = clip.EXACT_LIMIT
    return results


def clip_table(results: dict[str, Any]) -> str:
    """The measures as markdown rows (``| measure | value | target | met |``), for lab.bench's table."""
    rows: list[tuple[str, str, str, bool | None]] = [
        (
            f"CLIP indexing, {results['clip_index_images']} images, {results['clip_model']} "
            f"on {results['clip_device']} {results['clip_dtype']}",
            f"{results['clip_index_images_per_s']:.1f} img/s",
            "",
            None,
        ),
        ("same, one image at a time (naive)", f"{results['clip_naive_images_per_s']:.1f} img/s", "", None),
        ("speed-up of batching", f"{results['clip_index_speedup']:.1f}×", "", None),
        ("CLIP text query embedding", f"{results['clip_text_encode_ms']:.1f} ms", "", None),
    ]
    for label in ("1k", "10k", "100k"):
        key = f"clip_query_ms_{label}"
        if key not in results:
            continue
        target = TARGETS.get(key)
        rows.append(
            (
                f"CLIP search over {label} images (exact, k=8)",
                f"{results[key]:.2f} ms",
                f"< {target:.0f} ms" if target else "",
                results[key] < target if target else None,
            )
        )
        naive = results[f"clip_naive_query_ms_{label}"]
        rows.append((f"same, Python loop over {label} images", f"{naive:.1f} ms", "", None))
        rows.append((f"speed-up at {label}", f"{results[f'clip_query_speedup_{label}']:.0f}×", "", None))
    return "\n".join(
        f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |"
        for name, value, target, met in rows
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure CLIP indexing and search speed.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer images and repetitions (for tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = clip_bench(quick=args.quick)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("| measure | value | target | met |\n| --- | --- | --- | --- |\n" + clip_table(results))


if __name__ == "__main__":
    main()
