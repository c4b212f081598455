"""What a run will do and cost before it starts: the method, the steps, memory and time (:func:`plan`).

Everything here is read from the model's config and the tokenized data; no weights are loaded. The
estimates are rough (the progress bar's ETA follows the real pace); the method is exact: what the
training process will run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from lab import device, models
from lab.errors import InputError
from lab.finetune import view
from lab.finetune.config import METHOD_TITLES, FineTuneConfig, model_and_path
from lab.finetune.data import Conversations, chat_template, load_conversations, tokenize
from lab.finetune.facts import ModelFacts, check_against_model, model_facts


def steps_for(config: FineTuneConfig, train_examples: int) -> int:
    """Optimizer steps of a run: ``max_steps`` if set, else the epochs' steps (Trainer's count), capped."""
    batches = math.ceil(train_examples / config.batch_size)
    per_epoch = max(1, batches // config.grad_accum)
    steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
    return min(steps, config.step_cap) if config.step_cap else steps


def eval_every(config: FineTuneConfig, total_steps: int) -> int:
    """Steps between held-out evaluations: ``eval_steps``, else four times per run (and at the end)."""
    return config.eval_steps or max(1, math.ceil(total_steps / 4))


def bitsandbytes_4bit() -> tuple[bool, str]:
    """Whether bitsandbytes is installed (its 4-bit NF4 runs on CUDA, and on CPU since 0.45)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install bitsandbytes==0.50.2)"
    from importlib.metadata import version

    found = version("bitsandbytes")
    major, minor = (int(x) for x in found.split(".")[:2])
    if (major, minor) < (0, 45):
        return False, f"bitsandbytes {found} has no 4-bit on CPU (0.45 or newer has)"
    return True, f"bitsandbytes {found}"


def choose_method(config: FineTuneConfig, device_name: str) -> tuple[str, list[str]]:
    """What will run: ``qlora-4bit``, or LoRA in the device's precision; and notes for the reader.

    Raises:
        InputError: 4-bit was asked for on a CUDA GPU and bitsandbytes is missing (the book's run needs it).
    """
    kind = device_name.split(":")[0]
    dtype = str(device.select(device_name).dtype).removeprefix("torch.")
    plain = {"float32": "lora-fp32", "bfloat16": "lora-bf16", "float16": "lora-fp16"}[dtype]
    if not config.quantize_4bit:
        return plain, []
    ok, why = bitsandbytes_4bit()
    if kind == "cuda" and not ok:
        raise InputError(f"4-bit QLoRA needs bitsandbytes: {why}. Or untick 4-bit to train in 16-bit.")
    if kind == "mps" or not ok:
        where = "on Apple MPS" if kind == "mps" else f"here: {why}"
        return plain, [f"4-bit was asked for, but it cannot run {where}; training plain LoRA instead."]
    notes = []
    if kind == "cpu":
        notes.append(
            "4-bit NF4 on the CPU (bitsandbytes' CPU kernels) is slower than fp32 LoRA, and on a small "
            "model it saves little memory."
        )
    return "qlora-4bit", notes


def _matmul_gflops(device_name: str) -> float:
    """Rough 16-bit matmul throughput of a GPU (float32 elsewhere), measured for ~0.1 s."""
    import torch

    cuda = device_name.startswith("cuda")
    dtype = torch.float16 if cuda else torch.float32
    size = 2048 if cuda else 384
    a = torch.randn(size, size, device=device_name, dtype=dtype)
    torch.mm(a, a)  # warm up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.1:
        torch.mm(a, a)
        count += 1
    if cuda:
        torch.cuda.synchronize()
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


_throughput: dict[str, float] = {}

# Fraction of a GPU's measured matmul rate that LoRA training reaches (the book's T4: 375 steps in 765 s).
GPU_TRAINING_EFFICIENCY = 0.35
# FLOP/s that LoRA training reaches per CPU core in float32 (SmolLM2 on this lab's 2-core machines). A
# CPU is not timed here: a short matmul in a busy server process measures the contention, not the CPU.
CPU_TRAINING_FLOPS_PER_CORE = 22e9
# 4-bit weights are dequantised for every matmul: measured 1.35× the time of fp32 LoRA on the CPU.
QLORA_SLOWDOWN = 1.35


@dataclass
class Plan:
    """What a run will do and cost, before it starts."""

    config: FineTuneConfig
    method: str
    device: str
    notes: list[str]
    facts: ModelFacts
    trainable: int
    train_examples: int
    eval_examples: int
    truncated: int
    train_tokens: int
    total_steps: int
    tokens_per_step: float
    memory_bytes: int
    memory_parts: dict[str, int]
    seconds: float
    source: str
    problems: list[str]

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable / (self.facts.parameters + self.trainable)

    @property
    def method_title(self) -> str:
        return METHOD_TITLES[self.method]

    def summary(self) -> str:
        """A Markdown paragraph for people (:func:`lab.finetune.view.plan_summary`)."""
        return view.plan_summary(self)


def estimate_memory(
    config: FineTuneConfig, facts: ModelFacts, method: str, longest: int, device_name: str = "cpu"
) -> dict[str, int]:
    """Rough bytes by part: weights, adapter with its gradients and Adam state, activations, runtime."""
    trainable = facts.lora_parameters(config.r, config.target_modules)
    other = facts.parameters - facts.linear_parameters
    if method == "qlora-4bit":
        # NF4 with double quantisation: ~4.13 bits per linear weight; the rest stays in the compute dtype.
        weights = facts.linear_parameters * 0.516 + other * (2 if device_name.startswith("cuda") else 4)
    else:
        weights = facts.parameters * (4 if method == "lora-fp32" else 2)
    adapter = trainable * 16  # fp32 weight, gradient and Adam's two moments
    tokens = config.batch_size * min(longest, config.max_seq_length)
    cuda = device_name.startswith("cuda")
    width = 2 if cuda else 4  # autocast computes in 16-bit on a GPU
    # What autograd keeps per layer and token, ~34 × hidden bytes in 16-bit (Korthikanti et al. 2022);
    # with checkpointing only each layer's input stays, and one layer is recomputed at a time.
    per_layer = 17 * facts.hidden_size * tokens * width
    layers = 1 if config.gradient_checkpointing else max(1, facts.layers)
    stored = facts.hidden_size * tokens * width * facts.layers if config.gradient_checkpointing else 0
    logits = 3 * tokens * facts.vocab_size * 4  # logits, their softmax and its gradient, in float32
    return {
        "weights": int(weights),
        "adapter + optimizer": int(adapter),
        "activations": int(per_layer * layers + stored + logits),
        # the CUDA context; on a CPU the training process itself (Python, torch, transformers)
        "runtime": int(6e8 if cuda else 1.2e9),
    }


def estimate_seconds(
    facts: ModelFacts,
    train_tokens_per_step: float,
    steps: int,
    config: FineTuneConfig,
    device_name: str,
    method: str = "lora-fp32",
) -> float:
    """Rough seconds: ~4 × parameters × tokens FLOPs per step (6 × with recomputation), at a typical rate."""
    import torch

    if device_name.startswith("cpu"):
        rate = CPU_TRAINING_FLOPS_PER_CORE * (config.cpu_threads or torch.get_num_threads())
    else:
        if device_name not in _throughput:
            _throughput[device_name] = _matmul_gflops(device_name)
        rate = _throughput[device_name] * 1e9 * GPU_TRAINING_EFFICIENCY
    flops_per_token = (6 if config.gradient_checkpointing else 4) * facts.parameters
    slowdown = QLORA_SLOWDOWN if method == "qlora-4bit" else 1.0
    return steps * train_tokens_per_step * flops_per_token / rate * slowdown


def plan(config: FineTuneConfig, chats: Conversations | None = None) -> Plan:
    """Check a run against its model and data, and estimate what it costs, without loading weights.

    Raises:
        InputError: a bad setting (r, learning rate, target module …), no usable data, not a causal LM.
        ModelUnavailable, DatasetUnavailable: the model or data set is not here.
    """
    config.validate()
    facts = model_facts(config.base_model)
    check_against_model(config, facts)
    device_name = device.select(config.device).device
    method, notes = choose_method(config, device_name)
    model_id, path = model_and_path(config.base_model)
    tokenizer = models.tokenizer(model_id, path)
    if chats is None:
        chats = load_conversations(config.dataset, config.max_examples, config.eval_examples, config.seed)
    tokens = tokenize(tokenizer, chats, chat_template(tokenizer, model_id), config.max_seq_length)
    steps = steps_for(config, len(tokens.train))
    mean = tokens.train_tokens / max(1, len(tokens.train))
    per_step = mean * config.batch_size * config.grad_accum
    longest = max(len(ids) for ids in tokens.train)
    parts = estimate_memory(config, facts, method, longest, device_name)
    seconds = estimate_seconds(facts, per_step, steps, config, device_name, method)
    if config.step_cap and steps == config.step_cap:
        notes.append(f"This server caps a run at {config.step_cap} steps.")
    return Plan(
        config=config,
        method=method,
        device=device_name,
        notes=notes,
        facts=facts,
        trainable=facts.lora_parameters(config.r, config.target_modules),
        train_examples=len(tokens.train),
        eval_examples=len(tokens.eval),
        truncated=tokens.truncated + tokens.eval_truncated,
        train_tokens=tokens.train_tokens,
        total_steps=steps,
        tokens_per_step=per_step,
        memory_bytes=sum(parts.values()),
        memory_parts=parts,
        seconds=seconds,
        source=chats.source,
        problems=chats.problems,
    )
