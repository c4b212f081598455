"""The ``finetune`` section: fine-tuning speed and memory, from real runs through ``lab.finetune.start``.

Every figure comes from a separate training process, as in the app, read back from the run's
``metrics.json``:

- the classroom preset on the CPU (SmolLM2-135M, LoRA r=8, batch 2 × 2, offline Wikipedia chats):
  optimizer steps per second, training tokens per second, the training process's peak memory, the time
  to the first step (process start, data, weights), all the preset's steps extrapolated against the
  "about 2 minutes on 2 cores" target, and the pre-run estimate against the measured time;
- with bitsandbytes installed (full run only): the same steps with the base model in 4-bit NF4 on the CPU;
- on a CUDA GPU: a TinyLlama-sized Llama (1.1 B parameters, random weights: TinyLlama itself is not
  installable offline) with the book's settings (4-bit NF4, r=64 on seven projections, batch 2 × 4,
  512 tokens, gradient checkpointing, paged AdamW), its seconds per step projected to the book's 375 steps
  against the book's T4 (375 steps in 765 s) and against the FLOP floor of an H100 (989 dense bf16
  TFLOPS; 6 × parameters × tokens per step, the backward pass recomputed by gradient checkpointing).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import shapes
from bench.report import Row, Section

TITLE = "Fine-tuning"
BOOK_STEPS, BOOK_T4_SECONDS = 375, 765.0
H100_BF16_FLOPS = 989e12
CLASSROOM_TARGET_S = 150.0  # "about 2 minutes on 2 cores", with a quarter's tolerance


def _run(config: Any) -> dict[str, Any]:
    """Run one fine-tune to the end; its metrics, plus the plan's estimate and the start-up time."""
    from lab import finetune

    job = finetune.start(config, finetune.Runner())
    result = job.wait()
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    first_step = (job.training_started or job.started or 0) - (job.started or 0)
    return {
        "method": metrics["method"],
        "steps": metrics["steps"],
        "train_s": metrics["train_seconds"],
        "steps_per_s": metrics["steps_per_second"],
        "tokens_per_s": metrics["tokens_per_second"],
        "tokens_per_step": metrics["train_tokens"] / metrics["steps"],
        "peak_memory_mb": metrics["peak_memory_bytes"] / 1e6,
        "startup_s": first_step,
        "estimated_s": job.plan.seconds,
        "estimated_memory_mb": job.plan.memory_bytes / 1e6,
        "parameters": job.plan.facts.parameters,
    }


def classroom_cpu(steps: int, quantize_4bit: bool = False) -> dict[str, Any]:
    """The classroom preset on the CPU for ``steps`` optimizer steps."""
    from lab import finetune

    with tempfile.TemporaryDirectory(prefix="lab-bench-ft-") as folder:
        config = finetune.FineTuneConfig.classroom(
            max_steps=steps, eval_examples=0, output_dir=folder, device="cpu", quantize_4bit=quantize_4bit
        )
        measured = _run(config)
    preset_steps = finetune.FineTuneConfig.classroom().max_steps
    measured["preset_steps"] = preset_steps
    measured["preset_train_s"] = preset_steps / measured["steps_per_s"]
    measured["estimate_ratio"] = measured["estimated_s"] / measured["train_s"]
    return measured


def _write_tinyllama_sized(folder: Path) -> Path:
    """A Llama of TinyLlama-1.1B's shape, random float16 weights built on the GPU, and a small BPE."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab import testing

    tokenizer = testing.build_tokenizer("bpe")
    config = LlamaConfig(
        **shapes.TINYLLAMA,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def book_gpu(steps: int) -> dict[str, Any]:
    """The book's settings on a TinyLlama-sized random Llama in 4-bit, on CUDA, with 512-token chats."""
    import torch

    from lab import finetune

    with tempfile.TemporaryDirectory(prefix="lab-bench-ft-gpu-") as folder:
        root = Path(folder)
        model = _write_tinyllama_sized(root / "tinyllama-sized")
        answer = " ".join(["Tokens flow through attention and feed-forward layers of the model."] * 80)
        chat = {
            "messages": [
                {"role": "user", "content": "Tell me about tokens."},
                {"role": "assistant", "content": answer},
            ]
        }
        data = root / "chats.jsonl"
        data.write_text((json.dumps(chat) + "\n") * (steps * 8 + 8))
        config = finetune.FineTuneConfig(
            base_model=str(model),
            dataset=str(data),
            max_examples=steps * 8,
            eval_examples=0,
            max_steps=steps,
            output_dir=str(root / "runs"),
            device="cuda",
        )
        measured = _run(config)
    seconds_per_step = measured["train_s"] / measured["steps"]
    floor = 6 * measured["parameters"] * measured["tokens_per_step"] / H100_BF16_FLOPS
    measured.update(
        gpu=torch.cuda.get_device_name(0),
        seconds_per_step=seconds_per_step,
        book_375_steps_s=seconds_per_step * BOOK_STEPS,
        book_t4_s=BOOK_T4_SECONDS,
        speedup_vs_book_t4=BOOK_T4_SECONDS / (seconds_per_step * BOOK_STEPS),
        h100_floor_375_steps_s=floor * BOOK_STEPS,
    )
    return measured


def measure(quick: bool = False) -> dict[str, Any]:
    """Every run of the section (see the module docstring); ``quick`` runs fewer steps and runs."""
    import torch

    from lab import finetune

    results: dict[str, Any] = {"cpus": os.cpu_count()}
    results["classroom_cpu"] = classroom_cpu(steps=4 if quick else 12)
    ok, why = finetune.bitsandbytes_4bit()
    if not quick and ok:
        results["classroom_cpu_4bit"] = classroom_cpu(steps=6, quantize_4bit=True)
    elif not ok:
        results["classroom_cpu_4bit"] = f"skipped: {why}"
    if torch.cuda.is_available() and ok:
        results["book_gpu"] = book_gpu(steps=5 if quick else 20)
    else:
        results["book_gpu"] = "skipped: needs a CUDA GPU and bitsandbytes"
    return results


def _classroom_rows(label: str, run: dict[str, Any]) -> list[Row]:
    return [
        Row(
            f"{label}: training speed",
            run["steps_per_s"],
            "steps/s",
            note=f"{run['method']}, {run['steps']} steps, {run['tokens_per_step']:.0f} tokens/step, "
            f"{run['tokens_per_s']:.0f} tokens/s",
            better="higher",
        ),
        Row(f"{label}: peak memory of the training process", run["peak_memory_mb"], "MB"),
        Row(f"{label}: start-up to the first step", run["startup_s"], "s"),
        Row(
            f"{label}: the preset's {run['preset_steps']} steps (extrapolated)",
            run["preset_train_s"],
            "s",
            note="about 2 minutes on 2 cores",
            target=CLASSROOM_TARGET_S,
        ),
        Row(f"{label}: pre-run estimate ÷ measured time", run["estimate_ratio"], note="1 is a perfect plan"),
    ]


def section(details: dict[str, Any]) -> Section:
    """The rows of :func:`measure`'s figures; a skipped run is one row saying why."""
    rows: list[Row] = []
    for key, label in [
        ("classroom_cpu", "classroom preset, CPU"),
        ("classroom_cpu_4bit", "classroom preset, CPU, 4-bit"),
    ]:
        run = details.get(key)
        if isinstance(run, dict):
            rows += _classroom_rows(label, run)
        elif run is not None:
            rows.append(Row(label, None, note=run))
    gpu = details.get("book_gpu")
    label = "book settings, TinyLlama-sized, GPU"
    if isinstance(gpu, dict):
        rows += [
            Row(
                f"{label}: training speed",
                gpu["steps_per_s"],
                "steps/s",
                note=f"{gpu['gpu']}, {gpu['tokens_per_s']:.0f} tokens/s, "
                f"peak memory {gpu['peak_memory_mb']:.0f} MB",
                better="higher",
            ),
            Row(
                f"{label}: the book's {BOOK_STEPS} steps (projected)",
                gpu["book_375_steps_s"],
                "s",
                baseline=gpu["book_t4_s"],
                note=f"baseline: the book's T4; H100 FLOP floor {gpu['h100_floor_375_steps_s']:.0f} s",
            ),
        ]
    elif gpu is not None:
        rows.append(Row(label, None, note=gpu))
    return Section(TITLE, rows, details)


def run(quick: bool) -> Section:
    """4 classroom steps on the CPU when ``quick`` (12 in full, plus 6 in 4-bit), and the GPU run if any."""
    return section(measure(quick))
