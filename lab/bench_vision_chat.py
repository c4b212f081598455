"""Measure the BLIP-2 chat: ``python -m lab.bench_vision_chat [--json]``, or :func:`vision_chat_bench`.

No BLIP-2 weights install without the Hub, so the speed figures come from the tiny random model of
:func:`lab.testing.write_blip2` (1-layer ViT, Q-Former and OPT), loaded through the lab's own loader and run
through :mod:`lab.vision_chat`'s prepare and forward steps: they measure the lab's plumbing (processor,
prompt, generate loop, streaming thread), not BLIP-2's arithmetic. Each task generates exactly the same
number of tokens every run (random weights would otherwise stop at random places):

- time to first token: prepare (image, prompt, processor) and ``generate`` one new token;
- time to first text: the same through :func:`lab.vision_chat.generate_stream`, until the first text;
- tokens per second: for ``new_tokens`` tokens end to end, and for the decoding steps alone.

Memory by dtype: the tiny model as loaded, and ``Salesforce/blip2-opt-2.7b``'s real architecture counted
on PyTorch's meta device (shapes only, no weights). BLIP-2 keeps its Q-Former and query tokens in float32
whatever the dtype; 8-bit and 4-bit figures are estimates (bitsandbytes quantises the linear layers only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import models, vision_chat

BENCH_ID = "bench/tiny-random-blip2"
IMAGE = Path(__file__).resolve().parent.parent / "assets" / "book" / "images" / "car.png"
HISTORY = [
    ("Write down what you see in this picture.", "A sports car driving on the road at sunset"),
    ("What colour is it?", "orange"),
]
QUESTION = "What would it cost me to drive that car?"


def _median_ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


def _prepare(vc: models.VisionChatModel, task: str, new_tokens: int) -> vision_chat.Prepared:
    if task == "caption":
        prepared = vision_chat.prepare_caption(vc, IMAGE, max_new_tokens=new_tokens)
    else:
        choice = vision_chat.Decoding(max_new_tokens=new_tokens)
        prepared = vision_chat.prepare_chat(vc, IMAGE, HISTORY, QUESTION, choice)
    # Exactly new_tokens every run: a random model would stop at a random end-of-text token.
    prepared.generate_kwargs["min_new_tokens"] = new_tokens
    return prepared


def _time_task(vc: models.VisionChatModel, task: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    first, first_text, whole = [], [], []
    for _ in range(repeats + 1):  # the first round warms up (allocations, lazy imports)
        started = time.perf_counter()
        prepared = _prepare(vc, task, 1)
        vision_chat.generate_text(vc, prepared)
        first.append(time.perf_counter() - started)

        started = time.perf_counter()
        stream = vision_chat.generate_stream(vc, _prepare(vc, task, new_tokens))
        next(stream)
        first_text.append(time.perf_counter() - started)
        stream.close()

        started = time.perf_counter()
        prepared = _prepare(vc, task, new_tokens)
        vision_chat.generate_text(vc, prepared)
        whole.append(time.perf_counter() - started)
    first, first_text, whole = first[1:], first_text[1:], whole[1:]
    ttft, total = statistics.median(first), statistics.median(whole)
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "new_tokens": new_tokens,
        "ttft_ms": ttft * 1000,
        "first_text_ms": _median_ms(first_text),
        "total_ms": total * 1000,
        "tokens_per_s": new_tokens / total,
        "decode_tokens_per_s": (new_tokens - 1) / max(total - ttft, 1e-9),
    }


def _bytes_by_dtype(named_sizes: list[tuple[str, int, bool]], keep_fp32: set[str]) -> dict[str, float]:
    """MB of the weights per dtype; ``named_sizes`` is (name, elements, is a linear layer's weight)."""
    kept = sum(n for name, n, _ in named_sizes if name.split(".")[0] in keep_fp32)
    rest = sum(n for name, n, _ in named_sizes if name.split(".")[0] not in keep_fp32)
    linear = sum(n for name, n, lin in named_sizes if lin and name.split(".")[0] not in keep_fp32)
    others = rest - linear
    return {
        "float32": (kept + rest) * 4 / 1e6,
        "bfloat16 / float16": (kept * 4 + rest * 2) / 1e6,
        "8-bit (estimate)": (kept * 4 + others * 2 + linear * 1) / 1e6,
        "4-bit (estimate)": (kept * 4 + others * 2 + linear * 0.5) / 1e6,
    }


def _named_sizes(model: Any) -> list[tuple[str, int, bool]]:
    import torch

    linear_weights = {
        f"{name}.weight" for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
    }
    return [(name, p.numel(), name in linear_weights) for name, p in model.named_parameters()]


def real_architecture_memory() -> dict[str, Any]:
    """Parameters and MB by dtype of ``Salesforce/blip2-opt-2.7b`` (ViT-g, Q-Former, OPT-2.7b), no weights."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    # OPT-2.7b's shape; Blip2Config's vision and Q-Former defaults are BLIP-2's own (ViT-g/14, 12 layers).
    text = OPTConfig(
        hidden_size=2560,
        num_hidden_layers=32,
        ffn_dim=10240,
        num_attention_heads=32,
        vocab_size=50272,
        max_position_embeddings=2048,
        word_embed_proj_dim=2560,
    )
    config = Blip2Config(text_config=text.to_dict(), num_query_tokens=32)
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = Blip2ForConditionalGeneration(config)
    sizes = _named_sizes(model)
    return {
        "parameters": sum(n for _, n, _ in sizes),
        **_bytes_by_dtype(sizes, set(model._keep_in_fp32_modules)),
    }


def vision_chat_bench(
    folder: str | Path | None = None,
    *,
    repeats: int = 5,
    new_tokens: int = 20,
    device_name: str | None = "cpu",
) -> dict[str, Any]:
    """Time captioning and chat with the tiny random BLIP-2, and report the model's memory by dtype.

    Args:
        folder: a BLIP-2 folder to measure instead of a freshly written tiny random one.
        repeats: timed runs per figure (medians are reported), after one warm-up run.
        new_tokens: tokens generated per caption and per answer.
        device_name: where to run (``None``: the lab's choice, e.g. CUDA on a GPU machine).
    """
    with tempfile.TemporaryDirectory() as scratch:
        if folder is None:
            from lab.testing import write_blip2

            folder = write_blip2(Path(scratch) / "tiny-blip2")
        started = time.perf_counter()
        with models.vision_chat_model(BENCH_ID, folder, quantization="none", device_name=device_name) as vc:
            load_s = time.perf_counter() - started
            results: dict[str, Any] = {
                "model": "tiny random BLIP-2 (lab.testing.write_blip2): plumbing speed, not BLIP-2's",
                "device": vc.device,
                "precision": vc.precision,
                "load_s": load_s,
                "query_tokens": vc.query_tokens,
            }
            for task in ("caption", "chat"):
                results[task] = _time_task(vc, task, new_tokens, repeats)
            from lab.cache import module_nbytes

            results["memory_mb"] = {
                "tiny, as loaded": module_nbytes(vc) / 1e6,
                "tiny": _bytes_by_dtype(_named_sizes(vc.model), set(vc.model._keep_in_fp32_modules or [])),
                "Salesforce/blip2-opt-2.7b": real_architecture_memory(),
            }
    return results


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    rows = [
        ("model", results["model"]),
        ("device, precision", f"{results['device']}, {results['precision']}"),
        ("load through the cache (cold)", f"{results['load_s']:.2f} s"),
    ]
    for task in ("caption", "chat"):
        r = results[task]
        rows += [
            (
                f"{task}: time to first token ({r['prompt_tokens']} prompt tokens)",
                f"{r['ttft_ms']:.1f} ms",
            ),
            (f"{task}: time to first streamed text", f"{r['first_text_ms']:.1f} ms"),
            (
                f"{task}: {r['new_tokens']} tokens",
                f"{r['total_ms']:.1f} ms = {r['tokens_per_s']:.0f} tokens/s "
                f"(decoding alone {r['decode_tokens_per_s']:.0f} tokens/s)",
            ),
        ]
    memory = results["memory_mb"]
    rows.append(("memory of the tiny model as loaded", f"{memory['tiny, as loaded']:.2f} MB"))
    for name in ("tiny", "Salesforce/blip2-opt-2.7b"):
        figures = memory[name]
        dtypes = ", ".join(
            f"{k} {v / 1000:.2f} GB" if v > 1000 else f"{k} {v:.2f} MB"
            for k, v in figures.items()
            if k != "parameters"
        )
        params = f" ({figures['parameters'] / 1e9:.2f} B parameters)" if "parameters" in figures else ""
        rows.append((f"memory by dtype, {name}{params}", dtypes))
    lines = ["| measure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the BLIP-2 chat's speed and memory.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... ('auto' for the lab's choice)")
    args = parser.parse_args(argv)
    results = vision_chat_bench(
        repeats=args.repeats, device_name=None if args.device == "auto" else args.device
    )
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
