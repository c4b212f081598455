"""The ``vision_chat`` section: the BLIP-2 chat's speed and memory.

No BLIP-2 weights install without the Hub, so the speed figures come from the tiny random model of
:func:`lab.testing.write_blip2` (1-layer ViT, Q-Former and OPT), loaded through the lab's own loader and run
through :mod:`lab.vision_chat`'s prepare and forward steps: they measure the lab's plumbing (processor,
prompt, generate loop, streaming thread), not BLIP-2's arithmetic. Each task generates exactly the same
number of tokens every run (random weights would otherwise stop at random places):

- time to first token: prepare (image, prompt, processor) and ``generate`` one new token;
- time to first text: the same through :func:`lab.vision_chat.generate_stream`, until the first text;
- tokens per second: for ``new_tokens`` tokens end to end, and for the decoding steps alone.

Memory by dtype: the tiny model as loaded, and ``Salesforce/blip2-opt-2.7b``'s real architecture counted
on PyTorch's meta device (shapes only, no weights), each against float32. BLIP-2 keeps its Q-Former and
query tokens in float32 whatever the dtype; 8-bit and 4-bit figures are estimates (bitsandbytes quantises
the linear layers only).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ROOT, shapes
from bench.report import Row, Section
from bench.timing import timed

TITLE = "BLIP-2 visual chat"
BENCH_ID = "bench/tiny-random-blip2"
REAL_ID = "Salesforce/blip2-opt-2.7b"
IMAGE = ROOT / "assets" / "book" / "images" / "car.png"
HISTORY = [
    ("Write down what you see in this picture.", "A sports car driving on the road at sunset"),
    ("What colour is it?", "orange"),
]
QUESTION = "What would it cost me to drive that car?"


def _prepare(vc: Any, task: str, new_tokens: int) -> Any:
    from lab import vision_chat

    if task == "caption":
        prepared = vision_chat.prepare_caption(vc, IMAGE, max_new_tokens=new_tokens)
    else:
        choice = vision_chat.Decoding(max_new_tokens=new_tokens)
        prepared = vision_chat.prepare_chat(vc, IMAGE, HISTORY, QUESTION, choice)
    # Exactly new_tokens every run: a random model would stop at a random end-of-text token.
    prepared.generate_kwargs["min_new_tokens"] = new_tokens
    return prepared


def _first_text(vc: Any, task: str, new_tokens: int) -> None:
    """Start a stream, wait for its first text, and close it (which stops its thread)."""
    from lab import vision_chat

    stream = vision_chat.generate_stream(vc, _prepare(vc, task, new_tokens))
    next(stream)
    stream.close()


def _time_task(vc: Any, task: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    from lab import vision_chat

    first, first_text, whole = [], [], []
    for _ in range(repeats + 1):  # the first round warms up (allocations, lazy imports)
        first.append(timed(lambda: vision_chat.generate_text(vc, _prepare(vc, task, 1)))[0])
        first_text.append(timed(lambda: _first_text(vc, task, new_tokens))[0])
        prepared = _prepare(vc, task, new_tokens)
        whole.append(timed(lambda p=prepared: vision_chat.generate_text(vc, p))[0])
    ttft, text, total = (statistics.median(runs[1:]) for runs in (first, first_text, whole))
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "new_tokens": new_tokens,
        "ttft_ms": ttft * 1000,
        "first_text_ms": text * 1000,
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


def _kept_in_fp32(model: Any) -> set[str]:
    # transformers' private list of modules kept in float32 (BLIP-2: the Q-Former and its query tokens);
    # read here only, as of transformers 5.24.
    return set(getattr(model, "_keep_in_fp32_modules", None) or [])


def real_architecture_memory() -> dict[str, Any]:
    """Parameters and MB by dtype of ``Salesforce/blip2-opt-2.7b`` (ViT-g, Q-Former, OPT-2.7b), no weights."""
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    shape = shapes.BLIP2_OPT
    config = Blip2Config(
        vision_config=shape["vision"],
        qformer_config=shape["qformer"],
        text_config=OPTConfig(**shape["text"], vocab_size=shapes.OPT_VOCABULARY).to_dict(),
        num_query_tokens=shape["query_tokens"],
    )
    with torch.device("meta"):  # shapes only: nothing is allocated
        model = Blip2ForConditionalGeneration(config)
    sizes = _named_sizes(model)
    return {"parameters": sum(n for _, n, _ in sizes), **_bytes_by_dtype(sizes, _kept_in_fp32(model))}


def measure(
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
    from lab import models, testing
    from lab.cache import module_nbytes

    with tempfile.TemporaryDirectory() as scratch:
        if folder is None:
            folder = testing.write_blip2(Path(scratch) / "tiny-blip2")
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
            results["memory_mb"] = {
                "tiny, as loaded": module_nbytes(vc) / 1e6,
                "tiny": _bytes_by_dtype(_named_sizes(vc.model), _kept_in_fp32(vc.model)),
                REAL_ID: real_architecture_memory(),
            }
    return results


def section(details: dict[str, Any]) -> Section:
    """The rows of :func:`measure`'s figures."""
    rows = [
        Row(
            "load through the cache (cold)",
            details["load_s"],
            "s",
            note=f"{details['model']}; {details['device']}, {details['precision']}",
        )
    ]
    for task in ("caption", "chat"):
        r = details[task]
        rows += [
            Row(
                f"{task}: time to first token", r["ttft_ms"], "ms", note=f"{r['prompt_tokens']} prompt tokens"
            ),
            Row(f"{task}: time to first streamed text", r["first_text_ms"], "ms"),
            Row(
                f"{task}: {r['new_tokens']} tokens end to end",
                r["tokens_per_s"],
                "tokens/s",
                note=f"{r['total_ms']:.1f} ms; decoding alone {r['decode_tokens_per_s']:.0f} tokens/s",
                better="higher",
            ),
        ]
    memory = details["memory_mb"]
    rows.append(Row("memory of the tiny model as loaded", memory["tiny, as loaded"], "MB"))
    for name in ("tiny", REAL_ID):
        figures = memory[name]
        params = f", {figures['parameters'] / 1e9:.2f} B parameters" if "parameters" in figures else ""
        for dtype, mb in figures.items():
            if dtype in ("parameters", "float32"):
                continue
            rows.append(
                Row(
                    f"weights of {name} in {dtype}",
                    mb,
                    "MB",
                    baseline=figures["float32"],
                    note=f"baseline: float32{params}",
                )
            )
    return Section(TITLE, rows, details)


def run(quick: bool) -> Section:
    """The tiny random BLIP-2 on the CPU (2 timed runs per figure, 5 in full), 20 tokens per answer."""
    return section(measure(repeats=2 if quick else 5))
