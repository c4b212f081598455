"""GPU check of the attention tab: ``python -m bench.gpu.check_attention`` on a CUDA machine.

Runs the tab's calls on real SmolLM2-135M weights (from ``LAB_MODEL_DIR`` or the packaged GGUF) on the CPU
in float32 and on CUDA in the lab's dtype (bf16 on Ampere and newer), and checks they agree: same top
next token, top-5 overlap, same logit-lens answer, causal attention that sums to one. Also times the KV
cache on the GPU (the book's 100-token experiment) and next-token latency on both devices.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from bench.timing import median_ms
from lab import attention, device

PROMPTS = [
    "The capital of France is",
    "The largest planet in the solar system is",
    "Water boils at a temperature of",
    "The author of Romeo and Juliet is",
]


def on(device_name: str, call):
    os.environ["LAB_DEVICE"] = device_name
    try:
        return call()
    finally:
        os.environ.pop("LAB_DEVICE", None)


def next_token_ms(prompt: str) -> float:
    """Median milliseconds of the attention tab's next-token call, the GPU's queue drained each time."""
    return round(median_ms(lambda: attention.next_token(prompt), 10, cuda_sync=True), 1)


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA GPU"
    report: dict[str, object] = {"placement": str(on("cuda", device.select))}
    agreement = []
    for prompt in PROMPTS:
        cpu = on("cpu", lambda p=prompt: attention.next_token(p, k=5))
        gpu = on("cuda", lambda p=prompt: attention.next_token(p, k=5))
        agreement.append(
            {
                "prompt": prompt,
                "cpu_top": [cpu[0][0], round(cpu[0][1], 3)],
                "gpu_top": [gpu[0][0], round(gpu[0][1], 3)],
                "same_top1": cpu[0][0] == gpu[0][0],
                "top5_overlap": len({t for t, _ in cpu} & {t for t, _ in gpu}),
            }
        )
    report["next_token_cpu_vs_gpu"] = agreement
    lens_cpu = on("cpu", lambda: attention.logit_lens(PROMPTS[0]))
    lens_gpu = on("cuda", lambda: attention.logit_lens(PROMPTS[0]))
    report["logit_lens_last_cell"] = {
        "cpu": lens_cpu[-1][-1][0][0],
        "gpu": lens_gpu[-1][-1][0][0],
        "layers": len(lens_gpu),
    }
    result = on("cuda", lambda: attention.attention(PROMPTS[0], attention.DECODER))
    upper = np.triu(np.ones(result.weights.shape[-2:], dtype=bool), 1)
    report["attention_gpu"] = {
        "shape": list(result.weights.shape),
        "rows_sum_to_1": bool(np.allclose(result.weights.sum(-1), 1, atol=2e-2)),
        "future_weight_max": float(np.abs(result.weights[..., upper]).max()),
    }
    report["next_token_ms"] = {
        "cpu_fp32": on("cpu", lambda: next_token_ms(PROMPTS[0])),
        "gpu": on("cuda", lambda: next_token_ms(PROMPTS[0])),
    }
    report["kv_cache_100_tokens_gpu"] = on(
        "cuda", lambda: attention.kv_cache_timing(PROMPTS[0], new_tokens=100)
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
