"""Measure the lab: ``python -m lab.bench`` prints a table, ``--json`` the same as JSON.

Every figure is measured in this one command on this machine, and speed is reported as a ratio against
a baseline run in the same command, so the numbers compare across machines:

- app import time (a fresh interpreter, median of 3) and time to first page (``python app.py`` until
  ``GET /`` answers);
- ``tokens.compare`` warm latency on the book's sample text across every tokenizer available here (median
  of many runs), against the book's approach of calling ``AutoTokenizer.from_pretrained`` (or building the
  tiktoken encoding) on every call;
- the attention tab's calls, warm (median), against the notebook way of loading the model with
  ``from_pretrained`` for each call: MiniLM attention on 64 tokens, SmolLM2's next token, the logit lens
  on a 10-token prompt;
- topics (``lab.bench_topics``): first fit of the default corpus, refit after an HDBSCAN change and the
  interactive map, against BERTopic refitting from scratch;
- CLIP (``lab.bench_clip``): batched indexing against one image at a time, and exact search over 1k, 10k
  and 100k vectors against a Python loop;
- BLIP-2 (``lab.bench_vision_chat``): time to first token and tokens per second of the tiny random model,
  and the real model's memory by dtype;
- fine-tuning (``lab.bench_finetune``): optimizer steps and training tokens per second of the classroom
  preset on the CPU (and, on a GPU, the book's settings on a TinyLlama-sized model in 4-bit);
- peak resident memory of this process.

``--only startup,tokenizers,attention`` runs some sections.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {
    "import_s": 3.0,
    "compare_warm_ms": 20.0,
    "speedup_vs_reload": 50.0,
    "attention_64_ms": 150.0,
    "next_token_ms": 400.0,
    "logit_lens_ms": 1000.0,
}
SECTIONS = ("startup", "tokenizers", "attention", "topics", "clip", "vision_chat", "finetune")


def _child_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }


def app_import_seconds(repeats: int = 3) -> float:
    """Median seconds for a fresh interpreter to ``import app``."""
    code = "import time; t = time.perf_counter(); import app; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env=_child_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def first_page_seconds(timeout: float = 120.0) -> float:
    """Seconds from starting ``python app.py`` until its page answers ``GET /``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**_child_env(), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"the app did not answer within {timeout:.0f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _book_style_compare(text: str, names: list[str]) -> None:
    """The book's approach: load each tokenizer from its files on every call, then decode each id."""
    from lab import models

    for name in names:
        tokenizer = models.load_tokenizer_uncached(models.locate(name, "tokenizer"))
        if hasattr(tokenizer, "decode_single_token_bytes"):
            ids = tokenizer.encode(text, disallowed_special=())
            [tokenizer.decode_single_token_bytes(i) for i in ids]
        else:
            ids = tokenizer(text)["input_ids"]
            [tokenizer.decode([i]) for i in ids]


def compare_latency(repeats: int, baseline_repeats: int) -> dict[str, Any]:
    """Warm ``tokens.compare`` against reloading every tokenizer on every call."""
    from lab import tokens

    text = tokens.sample_text()
    names = tokens.available()
    tokens.compare(text, names)  # warm: every tokenizer loaded once into the cache
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        tokens.compare(text, names)
        warm.append(time.perf_counter() - started)
    reload = []
    for _ in range(baseline_repeats):
        started = time.perf_counter()
        _book_style_compare(text, names)
        reload.append(time.perf_counter() - started)
    warm_ms, reload_ms = statistics.median(warm) * 1000, statistics.median(reload) * 1000
    return {
        "tokenizers": len(names),
        "compare_warm_ms": warm_ms,
        "reload_every_call_ms": reload_ms,
        "speedup_vs_reload": reload_ms / warm_ms,
    }


def _median_ms(call, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def attention_latency(repeats: int, baseline_repeats: int) -> dict[str, Any]:
    """The attention tab's calls warm, against loading the model fresh for each call (the notebook way)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from lab import attention, models

    text64 = " ".join(["the quick brown fox jumps over the lazy dog"] * 7)[:300]
    tokenizer = models.tokenizer(attention.ENCODER)
    while len(tokenizer(text64)["input_ids"]) > 64:
        text64 = text64.rsplit(" ", 1)[0]
    prompt = "The capital of France is a big city with many"  # 10 SmolLM2 tokens (reported below)

    def fresh_attention() -> None:
        folder = models.locate(attention.ENCODER)
        fresh = AutoModel.from_pretrained(folder, attn_implementation="eager")
        ids = AutoTokenizer.from_pretrained(folder)(text64, return_tensors="pt")
        with torch.no_grad():
            fresh(**ids, output_attentions=True)

    def fresh_next_token() -> None:
        folder = models.locate(attention.DECODER)
        fresh = AutoModelForCausalLM.from_pretrained(folder)
        ids = AutoTokenizer.from_pretrained(folder)(prompt, return_tensors="pt")
        with torch.no_grad():
            fresh(**ids).logits[0, -1].softmax(-1).topk(10)

    results: dict[str, Any] = {}
    attention.attention(text64, attention.ENCODER)  # warm: load once
    attention.next_token(prompt)
    results["attention_tokens"] = len(tokenizer(text64)["input_ids"])
    results["lens_prompt_tokens"] = len(models.tokenizer(attention.DECODER)(prompt)["input_ids"])
    results["attention_64_ms"] = _median_ms(lambda: attention.attention(text64, attention.ENCODER), repeats)
    results["attention_fresh_ms"] = _median_ms(fresh_attention, baseline_repeats)
    results["next_token_ms"] = _median_ms(lambda: attention.next_token(prompt), repeats)
    results["next_token_fresh_ms"] = _median_ms(fresh_next_token, baseline_repeats)
    results["logit_lens_ms"] = _median_ms(lambda: attention.logit_lens(prompt), max(1, repeats // 2))
    return results


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


def run(quick: bool = False, only: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    if "startup" in only:
        results["import_s"] = app_import_seconds(1 if quick else 3)
        results["first_page_s"] = first_page_seconds()
    if "tokenizers" in only:
        results.update(compare_latency(repeats=20 if quick else 200, baseline_repeats=1 if quick else 3))
    if "attention" in only:
        results.update(attention_latency(repeats=3 if quick else 10, baseline_repeats=1 if quick else 3))
    if "topics" in only:
        from lab.bench_topics import topics_bench

        results["topics"] = topics_bench(quick=quick)
    if "clip" in only:
        from lab.bench_clip import clip_bench

        results.update(clip_bench(quick=quick))
    if "vision_chat" in only:
        from lab.bench_vision_chat import vision_chat_bench

        results["vision_chat"] = vision_chat_bench(repeats=2 if quick else 5)
    if "finetune" in only:
        from lab.bench_finetune import finetune_bench

        results["finetune"] = finetune_bench(quick=quick)
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def _row(
    name: str, value: str, target: str = "", met: bool | None = None
) -> tuple[str, str, str, bool | None]:
    return name, value, target, met


def table(results: dict[str, Any]) -> str:
    rows = []
    if "import_s" in results:
        rows += [
            _row(
                "app import (no model loaded)",
                f"{results['import_s']:.2f} s",
                f"< {TARGETS['import_s']:.0f} s",
                results["import_s"] < TARGETS["import_s"],
            ),
            _row("time to first page", f"{results['first_page_s']:.2f} s"),
        ]
    if "compare_warm_ms" in results:
        rows += [
            _row(
                f"compare, {results['tokenizers']} tokenizers, warm (median)",
                f"{results['compare_warm_ms']:.2f} ms",
                f"< {TARGETS['compare_warm_ms']:.0f} ms",
                results["compare_warm_ms"] < TARGETS["compare_warm_ms"],
            ),
            _row("same, from_pretrained on every call (book)", f"{results['reload_every_call_ms']:.0f} ms"),
            _row(
                "speed-up of the cache",
                f"{results['speedup_vs_reload']:.0f}×",
                f"≥ {TARGETS['speedup_vs_reload']:.0f}×",
                results["speedup_vs_reload"] >= TARGETS["speedup_vs_reload"],
            ),
        ]
    if "attention_64_ms" in results:
        for key, fresh, label in [
            (
                "attention_64_ms",
                "attention_fresh_ms",
                f"MiniLM attention, {results['attention_tokens']} tokens",
            ),
            ("next_token_ms", "next_token_fresh_ms", "SmolLM2 next token"),
        ]:
            rows.append(
                _row(
                    f"{label}, warm (median)",
                    f"{results[key]:.0f} ms",
                    f"< {TARGETS[key]:.0f} ms",
                    results[key] < TARGETS[key],
                )
            )
            rows.append(
                _row(
                    "same, from_pretrained for the call (notebook)",
                    f"{results[fresh]:.0f} ms ({results[fresh] / results[key]:.0f}× slower)",
                )
            )
        rows.append(
            _row(
                f"SmolLM2 logit lens, {results['lens_prompt_tokens']}-token prompt",
                f"{results['logit_lens_ms']:.0f} ms",
                f"< {TARGETS['logit_lens_ms']:.0f} ms",
                results["logit_lens_ms"] < TARGETS["logit_lens_ms"],
            )
        )
    rows.append(_row("peak RSS of the bench process", f"{results['peak_rss_mb']:.0f} MB"))
    lines = ["| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for name, value, target, met in rows:
        lines.append(f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")
    if "clip_index_images" in results:
        from lab.bench_clip import clip_table

        lines.append(clip_table(results))
    if "topics" in results:
        from lab.bench_topics import table as topics_table

        lines += ["", "Topic modelling:", "", topics_table(results["topics"])]
    if "vision_chat" in results:
        from lab.bench_vision_chat import table as vision_chat_table

        lines += ["", "BLIP-2 visual chat:", "", vision_chat_table(results["vision_chat"])]
    if "finetune" in results:
        from lab.bench_finetune import table as finetune_table

        lines += ["", "Fine-tuning:", "", finetune_table(results["finetune"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the lab's start-up, tokenizer and model speed.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, from {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = tuple(part.strip() for part in args.only.split(",") if part.strip())
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = run(quick=args.quick, only=only)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
