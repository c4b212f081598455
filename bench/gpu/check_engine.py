"""GPU check of generation on vLLM: ``python -m bench.gpu.check_engine`` on a CUDA machine with vLLM.

Starts ``vllm serve`` on SmolLM2-135M-Instruct (the lab's offline copy, converted once from the packaged
GGUF, or ``--model`` any folder or Hub id) and sends the same 16 concurrent greedy generations three ways:

- plain vLLM: 16 threads calling the ``openai`` client directly (what the engine can do);
- the lab's engine path: 16 threads calling :func:`lab.attention.continue_text` with
  ``LAB_GENERATION_URL`` set (what the lab adds on top: should be within a few per cent of plain vLLM);
- in process: the same 16 one at a time on this GPU, as the app's queue serves them (:mod:`bench.engine`).

With ``--adapter FOLDER`` it also serves a LoRA adapter (``--enable-lora --lora-modules``) and checks that
the fine-tune tab's comparison gets its tuned answer from vLLM. Prints one JSON report with the ratios.

    pip install vllm==0.33.0
    python -m bench.gpu.check_engine [--tokens 64] [--adapter ~/.cache/llm-lab/runs/<id>/adapter]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import engine as engine_bench
from lab import catalog

SERVED = "smollm2"


def smollm2_folders() -> tuple[str, str]:
    """The lab's SmolLM2 (a safetensors folder converted from the packaged GGUF) and its tokenizer."""
    from lab.sources import smollm2_folder, smollm2_tokenizer_folder

    return str(smollm2_folder()), str(smollm2_tokenizer_folder())


def vllm_command(model: str, tokenizer: str | None, port: int, adapter: Path | None) -> list[str]:
    command = ["vllm", "serve", model, "--served-model-name", SERVED, "--port", str(port)]
    command += ["--max-num-seqs", "64", "--gpu-memory-utilization", "0.5", "--dtype", "bfloat16"]
    if tokenizer:
        command += ["--tokenizer", tokenizer]
    if adapter:
        command += ["--enable-lora", "--lora-modules", f"{adapter.parent.name}={adapter}"]
    return command


def wait_healthy(port: int, process: subprocess.Popen[bytes], seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vllm serve exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"vllm serve did not become healthy within {seconds:.0f} s")


def plain_vllm(url: str, new_tokens: int) -> list[float]:
    """Latencies (s) of the 16 requests sent by 16 threads straight through the ``openai`` client."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="not-needed")

    def generate(prompt: str) -> None:
        stream = client.completions.create(
            model=SERVED,
            prompt=prompt,
            max_tokens=new_tokens,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for _ in stream:
            pass

    generate(engine_bench.PROMPTS[0])  # warm-up
    started = time.perf_counter()

    def ask(prompt: str) -> float:
        generate(prompt)
        return time.perf_counter() - started

    with ThreadPoolExecutor(len(engine_bench.PROMPTS)) as pool:
        return list(pool.map(ask, engine_bench.PROMPTS))


def adapter_answer(url: str, adapter: Path) -> dict[str, Any]:
    """The fine-tune comparison with both answers from vLLM (the tuned one through ``--lora-modules``)."""
    from lab.finetune import compare

    os.environ["LAB_GENERATION_URL"] = url
    os.environ["LAB_GENERATION_MODELS"] = (
        f"{catalog.SMOLLM2}={SERVED},adapter:{adapter.parent.name}={adapter.parent.name}"
    )
    try:
        started = time.perf_counter()
        base, tuned = compare.generate_pair("What is a large language model?", catalog.SMOLLM2, adapter, 32)
        return {"base": base, "tuned": tuned, "seconds": time.perf_counter() - started}
    finally:
        del os.environ["LAB_GENERATION_URL"], os.environ["LAB_GENERATION_MODELS"]


def summary(latencies: list[float]) -> dict[str, float]:
    return {"total_s": max(latencies), "p95_s": engine_bench._p95(latencies)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a folder or Hub id for vllm serve (default: the lab's SmolLM2)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder of a SmolLM2 fine-tune run")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        sys.exit("check_engine needs a CUDA GPU and vLLM (pip install vllm==0.33.0)")
    model, tokenizer = (args.model, None) if args.model else smollm2_folders()
    process = subprocess.Popen(vllm_command(model, tokenizer, args.port, args.adapter))
    url = f"http://127.0.0.1:{args.port}/v1"
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "requests": len(engine_bench.PROMPTS)}
    try:
        wait_healthy(args.port, process)
        report["plain_vllm"] = summary(plain_vllm(url, args.tokens))
        report["lab_engine"] = summary(engine_bench.on_engine(url, args.tokens))
        if args.adapter:
            report["adapter"] = adapter_answer(url, args.adapter)
    finally:
        process.terminate()
        process.wait(timeout=60)
    report["in_process"] = summary(engine_bench.in_process(args.tokens))
    lab, plain, here = report["lab_engine"], report["plain_vllm"], report["in_process"]
    report["ratios"] = {
        "lab_engine_over_plain_vllm_total": lab["total_s"] / plain["total_s"],  # ~1: the lab adds little
        "in_process_over_lab_engine_total": here["total_s"] / lab["total_s"],  # the engine's gain
        "in_process_over_lab_engine_p95": here["p95_s"] / lab["p95_s"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
