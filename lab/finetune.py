"""Chapter 12: instruction-tune a causal LM with QLoRA (or LoRA), from a notebook or from the app.

The book fine-tunes TinyLlama on 3,000 UltraChat conversations with a 4-bit NF4 base model and a LoRA
adapter (r=64, alpha=32, dropout 0.1, seven projection layers), 375 steps on a T4. This module runs the
same recipe, on any causal LM of the catalog, with three data sources: ``"ultrachat"`` (the book's, from
the Hub), ``"wikipedia-instruct"`` (offline: ``assets/finetune/``, CC BY-SA 4.0) or a JSONL file of chats.

- prepare (pure, in the caller's process): :class:`FineTuneConfig` and its checks, the data
  (:func:`load_conversations`, :func:`preview`), the model's linear layers and the trainable-parameter
  count read from its config on PyTorch's meta device (:func:`model_facts`), and the memory and time
  estimate (:func:`plan`);
- forward: :func:`start` queues a run; one run at a time per process trains in a *separate* process
  (:mod:`lab.finetune_worker`), so an out-of-memory error or a crash never takes the app down, and
  :meth:`Job.cancel` ends it within seconds, memory included;
- present: each run writes its own folder (``<LAB_CACHE_DIR>/runs/<id>``: adapter safetensors and config,
  ``settings.json``, ``metrics.json``, ``log.txt``, optionally ``merged/`` in 16-bit), :func:`zip_run`
  packs it, and :func:`generate_pair` answers one prompt with the base model and the fine-tuned one.

Usage::

    from lab import finetune

    job = finetune.start(finetune.FineTuneConfig.classroom(max_steps=12))
    result = job.wait()
    print(result.method, result.losses[:3], result.adapter_dir)
    print(finetune.generate_pair(finetune.BOOK_PROMPT, result.base_model, result.adapter_dir))

Runs start through multiprocessing, so a script (not a notebook) that calls :func:`start` needs the usual
``if __name__ == "__main__":`` guard; under ``python app.py`` each run re-imports ``app`` (building the
page, launching nothing) before it trains.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import html
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lab import catalog, config, models
from lab.errors import InputError, LabError

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
BOOK_MODEL = "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T"
BOOK_TEMPLATE_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
ULTRACHAT_REPO = "HuggingFaceH4/ultrachat_200k"
ULTRACHAT_SPLIT = "test_sft"
DATASETS = ("wikipedia-instruct", "ultrachat")
WIKIPEDIA_FILE = (
    Path(__file__).resolve().parent.parent / "assets" / "finetune" / "wikipedia-instruct.jsonl.gz"
)
BOOK_TARGET_MODULES = ("k_proj", "gate_proj", "v_proj", "up_proj", "q_proj", "o_proj", "down_proj")
BOOK_PROMPT = "Tell me something about Large Language Models."
SCHEDULERS = ("cosine", "linear", "constant")
# TinyLlama-1.1B-Chat-v1.0's chat template (Zephyr's), which the book applies to the *base* TinyLlama's
# data; kept here so the book's preview renders offline too.
# Rendered: "<|user|>\n…</s>\n<|assistant|>\n…</s>\n".
TINYLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
Method = Literal["qlora-4bit", "lora-fp32", "lora-bf16", "lora-fp16"]
METHOD_TITLES = {
    "qlora-4bit": "QLoRA 4-bit NF4",
    "lora-fp32": "LoRA fp32",
    "lora-bf16": "LoRA bf16",
    "lora-fp16": "LoRA fp16",
}
Status = Literal["queued", "running", "done", "cancelled", "failed"]
ACTIVE: tuple[str, ...] = ("queued", "running")
CLASSROOM_MAX_STEPS = 60  # a classroom server caps every run, so one student cannot hold the queue
MAX_QUEUED = 16
CANCEL_GRACE_S = 2.0  # a run that does not stop by itself within this is terminated
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
ROLES = ("system", "user", "assistant")


class FineTuneError(LabError, RuntimeError):
    """A run failed (the message says why: out of memory, a crash, a bad input found while loading)."""


class DatasetUnavailable(LabError, ValueError):
    """A data set cannot be read here (the Hub is offline, or a package is missing); the message says why."""


# -- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FineTuneConfig:
    """One fine-tuning run. The defaults are the book's hyper-parameters on the offline model and data.

    ``FineTuneConfig.book()`` is the book's run exactly (TinyLlama, UltraChat, from the Hub);
    ``FineTuneConfig.classroom()`` finishes in about two minutes on two CPU cores.

    Attributes:
        base_model: a Hub id (catalog or not) or a local model folder.
        dataset: ``"wikipedia-instruct"``, ``"ultrachat"`` or the path of a JSONL file of chats.
        max_examples: training conversations (the book: 3,000).
        eval_examples: held-out conversations for the eval loss (0: none).
        epochs: passes over the data, when ``max_steps`` is 0.
        max_steps: optimizer steps; overrides ``epochs`` when above 0 (as in transformers' Trainer).
        step_cap: an upper bound on the steps whatever the rest says (a classroom server sets it); 0: none.
        target_modules: names of the linear layers that get a LoRA adapter.
        quantize_4bit: load the base model in 4-bit NF4 with double quantisation (bitsandbytes).
        merge: after training, also write the base model with the adapter merged in, in 16-bit.
        output_dir: the folder that holds the run folders (default ``<LAB_CACHE_DIR>/runs``).
        eval_steps: evaluate every this many steps (0: four times per run); always at the end.
        device: ``cpu``, ``cuda`` … (default: the lab's choice, :func:`lab.device.select`).
        cpu_threads: torch threads of the training process on a CPU (0: one per core).
    """

    base_model: str = SMOLLM2
    dataset: str = "wikipedia-instruct"
    max_examples: int = 3_000
    eval_examples: int = 50
    epochs: float = 1.0
    max_steps: int = 0
    step_cap: int = 0
    r: int = 64
    lora_alpha: float = 32
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = BOOK_TARGET_MODULES
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    batch_size: int = 2
    grad_accum: int = 4
    max_seq_length: int = 512
    gradient_checkpointing: bool = True
    quantize_4bit: bool = True
    merge: bool = False
    output_dir: str | None = None
    seed: int = 42
    eval_steps: int = 0
    device: str | None = None
    cpu_threads: int = 0

    @classmethod
    def book(cls, **changes: Any) -> FineTuneConfig:
        """The book's run: TinyLlama base, 3,000 UltraChat conversations, QLoRA r=64 (Hub needed)."""
        return cls(base_model=BOOK_MODEL, dataset="ultrachat", **changes)

    @classmethod
    def classroom(cls, **changes: Any) -> FineTuneConfig:
        """A quick CPU run: SmolLM2-135M, a few hundred Wikipedia examples, small r, 30 steps.

        The learning rate is five times the book's so that a few dozen steps show an effect.
        """
        values: dict[str, Any] = dict(
            base_model=SMOLLM2,
            dataset="wikipedia-instruct",
            max_examples=300,
            eval_examples=8,
            max_steps=30,
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            learning_rate=1e-3,
            batch_size=2,
            grad_accum=2,
            max_seq_length=256,
            gradient_checkpointing=False,
            quantize_4bit=False,
        )
        values.update(changes)
        return cls(**values)

    def replace(self, **changes: Any) -> FineTuneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FineTuneConfig:
        """Build from a dict (JSON), refusing unknown keys with a message that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if "target_modules" in values:
            modules = values["target_modules"]
            values["target_modules"] = tuple([modules] if isinstance(modules, str) else modules)
        return cls(**values)

    def validate(self) -> None:
        """Check the numbers without loading anything; raises ValueError with what to change."""

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        check(bool(self.base_model and self.base_model.strip()), "Choose a base model.")
        check(bool(self.dataset and self.dataset.strip()), "Choose a data set.")
        check(_is_int(self.r) and self.r > 0, f"LoRA rank r must be a whole number above 0, not {self.r}.")
        check(self.r <= 1024, f"LoRA rank r={self.r} is larger than any sensible adapter (at most 1024).")
        check(self.lora_alpha > 0, f"LoRA alpha must be above 0, not {self.lora_alpha}.")
        check(0 <= self.lora_dropout < 1, f"LoRA dropout must be in [0, 1), not {self.lora_dropout}.")
        check(
            isinstance(self.learning_rate, int | float) and 1e-6 <= self.learning_rate <= 1e-2,
            f"Learning rate {self.learning_rate:g} is out of range: use 1e-6 to 1e-2 "
            "(the book uses 2e-4; above 1e-2 the adapter diverges).",
        )
        check(self.lr_scheduler in SCHEDULERS, f"Scheduler must be one of {', '.join(SCHEDULERS)}.")
        check(0 <= self.warmup_ratio < 1, "Warm-up ratio must be in [0, 1).")
        check(_is_int(self.batch_size) and 1 <= self.batch_size <= 64, "Batch size must be 1 to 64.")
        check(_is_int(self.grad_accum) and 1 <= self.grad_accum <= 256, "Gradient accumulation: 1 to 256.")
        check(
            _is_int(self.max_seq_length) and 16 <= self.max_seq_length <= 32_768,
            f"Max sequence length must be 16 to 32,768 tokens, not {self.max_seq_length}.",
        )
        check(
            _is_int(self.max_examples) and 1 <= self.max_examples <= 200_000,
            "Examples must be 1 to 200,000.",
        )
        check(_is_int(self.eval_examples) and 0 <= self.eval_examples <= 2_000, "Eval examples: 0 to 2,000.")
        check(0 < self.epochs <= 100, f"Epochs must be above 0 and at most 100, not {self.epochs}.")
        check(_is_int(self.max_steps) and 0 <= self.max_steps <= 1_000_000, "Max steps must be 0 or more.")
        check(_is_int(self.step_cap) and self.step_cap >= 0, "The step cap must be 0 or more.")
        check(_is_int(self.eval_steps) and self.eval_steps >= 0, "Eval steps must be 0 or more.")
        check(_is_int(self.cpu_threads) and self.cpu_threads >= 0, "CPU threads must be 0 (all) or more.")
        check(len(self.target_modules) > 0, "Choose at least one target module for the LoRA adapter.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


PRESETS: dict[str, FineTuneConfig] = {
    "Book (GPU)": FineTuneConfig.book(),
    "Classroom quick (CPU)": FineTuneConfig.classroom(),
}


def model_and_path(base_model: str) -> tuple[str, str | None]:
    """Split ``base_model`` into the id the lab knows it by and a local folder, if it is one."""
    candidate = Path(base_model).expanduser()
    if base_model.startswith(("/", "./", "../", "~")) or candidate.is_dir():
        return base_model, str(candidate)
    return base_model, None


# -- data ---------------------------------------------------------------------------------------

Messages = list[dict[str, str]]


@dataclass
class Conversations:
    """Chats read from a data set: training ones, held-out ones, and what was skipped (with line numbers)."""

    train: list[Messages]
    eval: list[Messages]
    source: str
    problems: list[str] = field(default_factory=list)
    skipped: int = 0


def _normalise(record: Any) -> Messages:
    """One record as chat messages; accepts ``messages``, ShareGPT ``conversations`` and Alpaca shapes."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if "messages" in record or "conversations" in record:
        raw = record.get("messages", record.get("conversations"))
        if not isinstance(raw, list) or not raw:
            raise ValueError("'messages' must be a non-empty list")
        sharegpt = {"human": "user", "gpt": "assistant", "system": "system"}
        messages = []
        for turn in raw:
            if not isinstance(turn, dict):
                raise ValueError("every message must be an object with 'role' and 'content'")
            role = turn.get("role", sharegpt.get(str(turn.get("from")), turn.get("from")))
            content = turn.get("content", turn.get("value"))
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r} (use system, user, assistant)")
            if not isinstance(content, str) or not content.strip():
                raise ValueError(f"a {role} message has no text")
            messages.append({"role": role, "content": content})
    elif "instruction" in record or "prompt" in record:
        question = record.get("instruction", record.get("prompt"))
        extra = record.get("input") or ""
        answer = record.get("output", record.get("completion", record.get("response")))
        if not isinstance(question, str) or not isinstance(answer, str) or not answer.strip():
            raise ValueError("needs text in 'instruction'/'prompt' and 'output'/'completion'")
        question = f"{question}\n\n{extra}" if extra else question
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    else:
        raise ValueError("no 'messages' (or 'conversations', or 'instruction' + 'output') field")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("no assistant message to learn from")
    return messages


def read_jsonl(path: str | Path, limit: int | None = None) -> tuple[list[Messages], list[str], int]:
    """Read chats from a JSONL file (``.gz`` too): the usable ones, problems by line number, lines skipped.

    Blank lines are ignored. Reading stops after ``limit`` usable chats.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"The data file {path} does not exist.")
    opener = gzip.open if path.suffix == ".gz" else open
    chats, problems, skipped = [], [], 0
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    skipped += 1
                    problems.append(f"line {number}: not valid JSON ({error.msg}, column {error.colno})")
                    continue
                try:
                    chats.append(_normalise(record))
                except ValueError as error:
                    skipped += 1
                    problems.append(f"line {number}: {error}")
                if limit is not None and len(chats) >= limit:
                    break
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise ValueError(f"{path.name} is not a UTF-8 JSONL file: {error}") from None
    return chats, problems, skipped


def ultrachat_indices(num_rows: int, count: int, seed: int = 42) -> list[int]:
    """Rows of 🤗 datasets' ``shuffle(seed).select(range(count))`` (a NumPy ``default_rng`` permutation)."""
    import numpy as np

    return np.random.default_rng(seed).permutation(num_rows)[:count].tolist()


def _ultrachat(count: int, seed: int) -> list[Messages]:
    """The book's data: ``ultrachat_200k`` test_sft, shuffled with ``seed``, the first ``count`` rows."""
    if config.hub_offline():
        raise DatasetUnavailable(
            f"UltraChat ({ULTRACHAT_REPO}) is on the Hugging Face Hub, which is offline here "
            "(HF_HUB_OFFLINE=1). Use 'wikipedia-instruct' (offline) or upload a JSONL file of chats."
        )
    import importlib.util

    try:
        if importlib.util.find_spec("datasets") is not None:
            from datasets import load_dataset  # the book's own code, where 🤗 datasets is installed

            rows = load_dataset(ULTRACHAT_REPO, split=ULTRACHAT_SPLIT).shuffle(seed=seed).select(range(count))
            return [[dict(m) for m in row["messages"]] for row in rows]
        # Without 🤗 datasets: the same split's Parquet files and the same permutation.
        import pyarrow.parquet as pq
        from huggingface_hub import snapshot_download

        folder = snapshot_download(
            ULTRACHAT_REPO, repo_type="dataset", allow_patterns=[f"data/{ULTRACHAT_SPLIT}-*.parquet"]
        )
        files = sorted(Path(folder).glob(f"data/{ULTRACHAT_SPLIT}-*.parquet"))
        messages = [m for f in files for m in pq.read_table(f, columns=["messages"]).column(0).to_pylist()]
    except Exception as error:  # network, Hub and parquet errors all mean "not here"
        raise DatasetUnavailable(f"UltraChat could not be downloaded: {str(error)[:300]}") from error
    return [[dict(m) for m in messages[i]] for i in ultrachat_indices(len(messages), count, seed)]


def _split_eval(rows: list[Messages], train_count: int, eval_count: int) -> tuple[list, list]:
    """Training rows first; held-out rows after them, or carved from the end (≤10 %) when short."""
    if len(rows) > train_count:
        return rows[:train_count], rows[train_count : train_count + eval_count]
    carve = min(eval_count, len(rows) // 10)
    if carve == 0:
        return rows, []
    return rows[:-carve], rows[-carve:]


def load_conversations(
    dataset: str, max_examples: int, eval_examples: int = 0, seed: int = 42
) -> Conversations:
    """Read a data set: ``"wikipedia-instruct"``, ``"ultrachat"`` or a JSONL path.

    Raises:
        DatasetUnavailable: UltraChat without the Hub.
        ValueError: the file is missing, or holds no usable conversation (with the first problems).
    """
    wanted = max_examples + eval_examples
    problems: list[str] = []
    skipped = 0
    if dataset == "ultrachat":
        rows = _ultrachat(wanted, seed)
        source = f"{ULTRACHAT_REPO} {ULTRACHAT_SPLIT}, shuffle(seed={seed}), first {max_examples:,}"
    elif dataset == "wikipedia-instruct":
        rows, _, _ = read_jsonl(WIKIPEDIA_FILE, limit=wanted)
        source = "Wikipedia lead sections (CC BY-SA 4.0, assets/finetune/LICENSE.md)"
    else:
        rows, problems, skipped = read_jsonl(dataset, limit=wanted)
        source = Path(dataset).name
    if not rows:
        detail = "; ".join(problems[:5]) if problems else "the file is empty"
        raise ValueError(f"No usable conversations in {source}: {detail}.")
    train, held_out = _split_eval(rows, max_examples, eval_examples)
    return Conversations(train, held_out, source, problems, skipped)


def chat_template(tokenizer: Any, model_id: str) -> str:
    """The template that turns chats into text: the tokenizer's own, else TinyLlama chat's (the book's)."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own:
        return own
    try:  # where the Hub or a local copy has it, the book's template tokenizer itself
        book = getattr(models.tokenizer(BOOK_TEMPLATE_MODEL), "chat_template", None)
        if isinstance(book, str) and book:
            return book
    except catalog.ModelUnavailable:
        pass
    return TINYLLAMA_CHAT_TEMPLATE


def render_chat(tokenizer: Any, messages: Messages, template: str, generation_prompt: bool = False) -> str:
    """A chat as the model reads it, through the chat template."""
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text, adding BOS as SFTTrainer does unless the template already wrote it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    # verbose=False: long chats are truncated by the caller, transformers need not warn about them
    return list(tokenizer(text, add_special_tokens=add_special, verbose=False)["input_ids"])


@dataclass
class Tokenized:
    """Token ids of each training and held-out chat, cut to the max length, and how many were cut."""

    train: list[list[int]]
    eval: list[list[int]]
    truncated: int
    eval_truncated: int

    @property
    def train_tokens(self) -> int:
        return sum(len(ids) for ids in self.train)


def tokenize(tokenizer: Any, chats: Conversations, template: str, max_length: int) -> Tokenized:
    """Render every chat through the template and tokenize it; longer ones are truncated and counted."""

    def encode(rows: list[Messages]) -> tuple[list[list[int]], int]:
        out, cut = [], 0
        for messages in rows:
            ids = encode_text(tokenizer, render_chat(tokenizer, messages, template))
            if len(ids) > max_length:
                ids, cut = ids[:max_length], cut + 1
            out.append(ids)
        return out, cut

    train, truncated = encode(chats.train)
    held_out, eval_truncated = encode(chats.eval)
    return Tokenized(train, held_out, truncated, eval_truncated)


def steps_for(config: FineTuneConfig, train_examples: int) -> int:
    """Optimizer steps of a run: ``max_steps`` if set, else the epochs' steps (Trainer's count), capped."""
    batches = math.ceil(train_examples / config.batch_size)
    per_epoch = max(1, batches // config.grad_accum)
    steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
    return min(steps, config.step_cap) if config.step_cap else steps


def eval_every(config: FineTuneConfig, total_steps: int) -> int:
    """Steps between held-out evaluations: ``eval_steps``, else four times per run (and at the end)."""
    return config.eval_steps or max(1, math.ceil(total_steps / 4))


# -- the model, read from its config (no weights) ------------------------------------------------


class NotCausalLM(InputError):
    """The base model is not a decoder that predicts the next token."""


@dataclass(frozen=True)
class LinearLayer:
    """One kind of linear layer (by its last name part, e.g. ``q_proj``): how many, the first one's shape,
    and in + out summed over all of them (GPT-2's ``c_proj`` has two shapes)."""

    name: str
    count: int
    in_features: int
    out_features: int
    fan_total: int


@dataclass(frozen=True)
class ModelFacts:
    """What a fine-tune needs to know about a model before loading its weights."""

    model_id: str
    model_type: str
    parameters: int
    linear_parameters: int  # in the linear layers of the blocks: what 4-bit quantises
    linear_layers: tuple[LinearLayer, ...]
    layers: int
    hidden_size: int
    vocab_size: int
    max_positions: int | None

    @property
    def target_choices(self) -> list[str]:
        return [layer.name for layer in self.linear_layers]

    def lora_parameters(self, r: int, targets: tuple[str, ...] | list[str]) -> int:
        """Trainable parameters of a LoRA adapter: r × (in + out) for each adapted linear layer."""
        chosen = set(targets)
        return sum(r * layer.fan_total for layer in self.linear_layers if layer.name in chosen)


def _is_causal(model_config: Any) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if getattr(model_config, "is_encoder_decoder", False):
        return False
    if model_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    # BERT has a causal-LM class too, but an encoder checkpoint (BertModel, BertForMaskedLM) is not one.
    architectures = getattr(model_config, "architectures", None) or []
    return not architectures or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


@functools.lru_cache(maxsize=32)
def model_facts(base_model: str) -> ModelFacts:
    """Parameters and linear layers of a causal LM, from its config on PyTorch's meta device.

    Raises:
        NotCausalLM: an encoder, a sentence encoder, an encoder-decoder or a vision model.
        ModelUnavailable: the model is not here (the message says how to get it).
    """
    import torch

    model_id, path = model_and_path(base_model)
    entry = catalog.entry(model_id)
    hint = "choose a decoder such as SmolLM2 or TinyLlama"
    if catalog.is_known(model_id) and entry.kind not in ("causal-lm",):
        raise NotCausalLM(
            f"{entry.title} ({model_id}) is a {entry.kind}, not a causal language model: {hint}."
        )
    model_config = models.model_config(model_id, path)
    if not _is_causal(model_config):
        kind = "/".join(getattr(model_config, "architectures", None) or [model_config.model_type])
        raise NotCausalLM(f"{model_id} is a {kind} model, not a causal language model: {hint}.")
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: no memory, no weights
        network = AutoModelForCausalLM.from_config(model_config)
    from transformers.pytorch_utils import Conv1D

    output = network.get_output_embeddings()
    layers: dict[str, list[int]] = {}
    linear_total = 0
    for name, module in network.named_modules():
        if module is output:  # the LM head: peft leaves it alone, as does the book
            continue
        if isinstance(module, torch.nn.Linear):
            shape = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # GPT-2's linear layers, weight stored (in, out)
            shape = tuple(module.weight.shape)
        else:
            continue
        short = name.rsplit(".", 1)[-1]
        count, fan_in, fan_out, fan_total = layers.get(short, [0, *shape, 0])
        layers[short] = [count + 1, fan_in, fan_out, fan_total + sum(shape)]
        linear_total += module.weight.numel()
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    return ModelFacts(
        model_id=model_id,
        model_type=model_config.model_type,
        parameters=sum(p.numel() for p in network.parameters()),
        linear_parameters=linear_total,
        linear_layers=tuple(LinearLayer(n, *values) for n, values in layers.items()),
        layers=int(getattr(text_config, "num_hidden_layers", 0) or 0),
        hidden_size=int(getattr(text_config, "hidden_size", 0) or 0),
        vocab_size=int(getattr(text_config, "vocab_size", 0) or 0),
        max_positions=getattr(text_config, "max_position_embeddings", None),
    )


def check_against_model(config: FineTuneConfig, facts: ModelFacts) -> None:
    """Refuse target modules the model lacks and lengths beyond its positions."""
    unknown = [m for m in config.target_modules if m not in facts.target_choices]
    if unknown:
        raise ValueError(
            f"{facts.model_id} has no linear layer named {', '.join(unknown)}; "
            f"its linear layers are {', '.join(facts.target_choices)}."
        )
    if facts.max_positions and config.max_seq_length > facts.max_positions:
        raise ValueError(
            f"Max sequence length {config.max_seq_length} is beyond {facts.model_id}'s "
            f"{facts.max_positions} positions."
        )


# -- method, memory and time -----------------------------------------------------------------------


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
        ValueError: 4-bit was asked for on a CUDA GPU and bitsandbytes is missing (the book's run needs it).
    """
    from lab import device

    kind = device_name.split(":")[0]
    dtype = str(device.select(device_name).dtype).removeprefix("torch.")
    plain = {"float32": "lora-fp32", "bfloat16": "lora-bf16", "float16": "lora-fp16"}[dtype]
    if not config.quantize_4bit:
        return plain, []
    ok, why = bitsandbytes_4bit()
    if kind == "cuda" and not ok:
        raise ValueError(f"4-bit QLoRA needs bitsandbytes: {why}. Or untick 4-bit to train in 16-bit.")
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
        """A Markdown paragraph for people."""
        f = self.facts
        lines = [
            f"**{self.method_title}** on `{self.device}` · {f.model_id} "
            f"({f.parameters / 1e6:,.1f} M parameters)",
            f"- trainable: **{self.trainable:,}** parameters, {self.trainable_percent:.2f} % of "
            f"{f.parameters + self.trainable:,} "
            f"(r={self.config.r} on {', '.join(self.config.target_modules)})",
            f"- data: {self.train_examples:,} training and {self.eval_examples:,} held-out conversations "
            f"({self.source}); {self.train_tokens:,} training tokens; {self.truncated:,} longer than "
            f"{self.config.max_seq_length} tokens were truncated",
            f"- {self.total_steps:,} optimizer steps of {self.config.batch_size} × {self.config.grad_accum} "
            f"conversations (≈{self.tokens_per_step:,.0f} tokens per step)",
            f"- estimated memory **{_gb(self.memory_bytes)}** ("
            + ", ".join(f"{k} {_gb(v)}" for k, v in self.memory_parts.items())
            + f"); estimated time **{_duration(self.seconds)}** (rough; the progress bar's ETA follows "
            "the real pace)",
        ]
        if self.problems:
            lines.append(f"- skipped {len(self.problems):,} line(s): " + "; ".join(self.problems[:3]))
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.0f} MB"


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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
        ValueError: a bad setting (r, learning rate, target module …), no usable data, not a causal LM.
        ModelUnavailable, DatasetUnavailable: the model or data set is not here.
    """
    from lab import device

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


# -- preview ------------------------------------------------------------------------------------


@dataclass
class PreviewExample:
    text: str
    tokens: int
    truncated: bool


@dataclass
class DatasetPreview:
    """A few chats as the model will read them, with token counts, and figures for the whole set."""

    examples: list[PreviewExample]
    special_tokens: list[str]
    conversations: int
    held_out: int
    truncated: int
    mean_tokens: float
    max_tokens: int
    max_seq_length: int
    source: str
    problems: list[str]
    skipped: int


def preview(config: FineTuneConfig, n: int = 3, chats: Conversations | None = None) -> DatasetPreview:
    """Render the first ``n`` chats through the model's chat template and count tokens for all of them."""
    model_id, path = model_and_path(config.base_model)
    tokenizer = models.tokenizer(model_id, path)
    if chats is None:
        chats = load_conversations(config.dataset, config.max_examples, config.eval_examples, config.seed)
    template = chat_template(tokenizer, model_id)
    tokens = tokenize(tokenizer, chats, template, config.max_seq_length)
    lengths = [len(ids) for ids in tokens.train]
    examples = []
    for messages in chats.train[:n]:
        text = render_chat(tokenizer, messages, template)
        count = len(encode_text(tokenizer, text))
        examples.append(PreviewExample(text, count, count > config.max_seq_length))
    specials = sorted(
        {t for t in [*tokenizer.all_special_tokens, *getattr(tokenizer, "added_tokens_encoder", {})] if t},
        key=len,
        reverse=True,
    )
    return DatasetPreview(
        examples=examples,
        special_tokens=specials,
        conversations=len(tokens.train),
        held_out=len(tokens.eval),
        truncated=tokens.truncated,
        mean_tokens=sum(lengths) / max(1, len(lengths)),
        max_tokens=max(lengths),
        max_seq_length=config.max_seq_length,
        source=chats.source,
        problems=chats.problems,
        skipped=chats.skipped,
    )


PREVIEW_STYLE = """
<style>
.lab-ft{font-family:ui-sans-serif,system-ui,sans-serif;color:#1f2328;font-size:13px}
.lab-ft .chat{border:1px solid #d0d7de;border-radius:8px;padding:8px;margin:6px 0;background:#fff}
.lab-ft pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:12px;line-height:1.5}
.lab-ft .special{background:#ffebe9;outline:1px solid #cf222e;border-radius:3px;color:#a40e26;font-weight:600}
.lab-ft .meta{color:#57606a;font-size:12px}
.lab-ft .cut{color:#9a6700;font-weight:600}
.lab-ft .problems{color:#a40e26;font-size:12px}
</style>
"""


def _highlight(text: str, specials: list[str]) -> str:
    if not specials:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(s) for s in specials))
    out, last = [], 0
    for match in pattern.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        out.append(f'<span class="special">{html.escape(match.group())}</span>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def preview_html(result: DatasetPreview) -> str:
    """Self-contained HTML of a preview: special tokens highlighted, token counts, truncation marked."""
    head = (
        f"<div class='meta'><b>{result.conversations:,}</b> training and {result.held_out:,} held-out "
        f"conversations from {html.escape(result.source)} · mean {result.mean_tokens:,.0f} tokens, longest "
        f"{result.max_tokens:,}"
        + (
            f" · <span class='cut'>{result.truncated:,} longer than {result.max_seq_length} tokens, "
            "truncated</span>"
            if result.truncated
            else f" · none longer than {result.max_seq_length} tokens"
        )
        + "</div>"
    )
    if result.problems:
        shown = "<br>".join(html.escape(p) for p in result.problems[:8])
        more = f"<br>… and {len(result.problems) - 8:,} more" if len(result.problems) > 8 else ""
        head += f"<div class='problems'>Skipped {result.skipped:,} line(s):<br>{shown}{more}</div>"
    chats = []
    for index, example in enumerate(result.examples, start=1):
        cut = " · <span class='cut'>truncated</span>" if example.truncated else ""
        chats.append(
            f"<div class='chat'><div class='meta'>example {index} · {example.tokens:,} tokens{cut}</div>"
            f"<pre>{_highlight(example.text, result.special_tokens)}</pre></div>"
        )
    return f"{PREVIEW_STYLE}<div class='lab-ft'>{head}{''.join(chats)}</div>"


# -- runs: folders ----------------------------------------------------------------------------------


def runs_dir(output_dir: str | Path | None = None) -> Path:
    """The folder that holds every run folder (``<LAB_CACHE_DIR>/runs`` unless given)."""
    folder = Path(output_dir).expanduser() if output_dir else config.cache_dir() / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_run_dir(output_dir: str | Path | None = None) -> Path:
    """A new, empty run folder named by time and a random suffix; an existing one is never reused."""
    parent = runs_dir(output_dir)
    while True:
        folder = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def run_dir(run_id: str, output_dir: str | Path | None = None) -> Path:
    """The folder of a run by id (checked: an id is never a path)."""
    if not RUN_ID.match(run_id or ""):
        raise ValueError(f"{run_id!r} is not a run id (like 20260101-120000-0a1b2c3d).")
    folder = runs_dir(output_dir) / run_id
    if not folder.is_dir():
        raise ValueError(f"There is no run {run_id}.")
    return folder


def check_disk_space(folder: Path, need: int) -> None:
    """Refuse to start when the output's disk cannot hold the run."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ValueError(
            f"Not enough disk space for the run's output in {folder}: about {_gb(need)} needed, "
            f"{_gb(free)} free. Free some space or set LAB_CACHE_DIR (or output_dir) elsewhere."
        )


def output_bytes(config: FineTuneConfig, facts: ModelFacts) -> int:
    """Bytes a run writes: the fp32 adapter, and the 16-bit merged model when asked."""
    adapter = facts.lora_parameters(config.r, config.target_modules) * 4
    merged = facts.parameters * 2 if config.merge else 0
    return adapter + merged + 10_000_000


def zip_run(folder: str | Path) -> Path:
    """Pack a finished run folder (adapter, settings, metrics, log; not the merged model) into a zip."""
    folder = Path(folder)
    target = folder / f"{folder.name}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and relative.parts[0] != "merged" and not path.name.startswith(folder.name):
                archive.write(path, f"{folder.name}/{relative}")
    partial.replace(target)
    return target


# -- runs: jobs ---------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """How a run ended: its adapter, losses, steps, seconds and exactly what ran (``method``)."""

    run_id: str
    status: str
    base_model: str
    output_dir: Path
    adapter_dir: Path | None
    merged_dir: Path | None
    losses: list[tuple[int, float]]
    eval_losses: list[tuple[int, float]]
    steps: int
    seconds: float
    method: str
    tokens: int


class Job:
    """One run: queued, then running in its own process, then done, cancelled or failed.

    Attributes are updated from the run's process as it trains; read them any time, or take a
    consistent copy with :meth:`snapshot`.
    """

    def __init__(self, config: FineTuneConfig, run_plan: Plan, folder: Path, runner: Runner) -> None:
        self.config = config
        self.plan = run_plan
        self.output_dir = folder
        self.id = folder.name
        self.method = run_plan.method
        self.status: Status = "queued"
        self.phase = "queued"
        self.position = 0
        self.step = 0
        self.total_steps = run_plan.total_steps
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.learning_rates: list[tuple[int, float]] = []
        self.tokens = 0
        self.trainable: int | None = None
        self.logs: deque[str] = deque(maxlen=400)
        self.error: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.training_started: float | None = None
        self.finished: float | None = None
        self.result: RunResult | None = None
        self.pid: int | None = None  # of the training process, while it runs
        self._runner = runner
        self._done = threading.Condition()
        self._cancel = threading.Event()

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left: from the pace of the steps so far, else the plan's estimate."""
        if self.status != "running":
            return None
        if self.step and self.training_started:
            pace = (time.time() - self.training_started) / self.step
            return pace * (self.total_steps - self.step)
        return self.plan.seconds

    def snapshot(self, log_lines: int = 40) -> dict[str, Any]:
        """A JSON-ready copy of the job's state (what ``/finetune_status`` returns)."""
        with self._done:
            return {
                "job_id": self.id,
                "status": self.status,
                "phase": self.phase,
                "position": self.position,
                "step": self.step,
                "total_steps": self.total_steps,
                "losses": [list(p) for p in self.losses],
                "eval_losses": [list(p) for p in self.eval_losses],
                "learning_rates": [list(p) for p in self.learning_rates],
                "lr": self.learning_rates[-1][1] if self.learning_rates else None,
                "tokens": self.tokens,
                "elapsed_s": round(self.elapsed, 1),
                "eta_s": None if self.eta_seconds is None else round(self.eta_seconds, 1),
                "method": self.method,
                "method_title": METHOD_TITLES.get(self.method, self.method),
                "base_model": self.config.base_model,
                "output_dir": str(self.output_dir),
                "error": self.error,
                "logs": list(self.logs)[-log_lines:] if log_lines else [],
            }

    # -- acting ----------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the run: a queued one leaves the queue; a running one ends within a few seconds."""
        self._cancel.set()
        self._runner._cancelled(self)

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run ends and return its :class:`RunResult` (also when cancelled).

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            FineTuneError: the run failed (the message says why).
        """
        with self._done:
            if not self._done.wait_for(lambda: not self.active, timeout):
                raise TimeoutError(f"run {self.id} is still {self.status} after {timeout} s")
        if self.status == "failed":
            raise FineTuneError(self.error or "the run failed")
        assert self.result is not None
        return self.result

    # -- updates from the runner (its thread only) -------------------------------------------------
    def _log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for line in text.rstrip().splitlines() or [""]:
            self.logs.append(f"{stamp} {line}")
            with open(self.output_dir / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {line}\n")

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._done:
            if kind == "log":
                self._log(event["text"])
            elif kind == "phase":
                self.phase = event["phase"]
                if event["phase"] == "training":
                    self.training_started = time.time()
            elif kind == "plan":
                self.total_steps = event["total_steps"]
                self.trainable = event.get("trainable")
                self.method = event.get("method", self.method)
            elif kind == "step":
                self.step = event["step"]
                self.losses.append((event["step"], event["loss"]))
                self.learning_rates.append((event["step"], event["lr"]))
                self.tokens = event.get("tokens", self.tokens)
            elif kind == "eval":
                self.eval_losses.append((event["step"], event["loss"]))
            elif kind == "error":
                self.error = event["message"]
                self._log(f"error: {event['message']}")

    def _finish(self, status: Status, error: str | None = None) -> None:
        with self._done:
            self.status = status
            self.phase = status
            self.position = 0
            self.error = error or self.error
            self.finished = time.time()
            if status == "failed":
                self._log(f"failed: {self.error}")
            elif status == "cancelled":
                self._log("cancelled")
            adapter = self.output_dir / "adapter"
            merged = self.output_dir / "merged"
            self.result = RunResult(
                run_id=self.id,
                status=status,
                base_model=self.config.base_model,
                output_dir=self.output_dir,
                adapter_dir=adapter if status == "done" and adapter.is_dir() else None,
                merged_dir=merged if status == "done" and merged.is_dir() else None,
                losses=list(self.losses),
                eval_losses=list(self.eval_losses),
                steps=self.step,
                seconds=(self.finished - self.started) if self.started else 0.0,
                method=self.method,
                tokens=self.tokens,
            )
            self._done.notify_all()


class Runner:
    """Runs queued jobs one at a time, each in a fresh process; one per app process (:data:`RUNNER`)."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[Job] = []
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> Job:
        with self._lock:
            if len(self._queue) >= self.max_queued:
                raise ValueError(
                    f"{len(self._queue)} runs are already waiting; try again when the queue is shorter."
                )
            self._jobs[job.id] = job
            self._queue.append(job)
            self._renumber()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="finetune-runner", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        job._log(
            f"queued: {job.config.base_model} on {job.config.dataset}, {job.total_steps} steps, "
            f"{METHOD_TITLES[job.method]}"
            + (f" (position {job.position} in the queue)" if job.position else "")
        )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    @property
    def current(self) -> Job | None:
        return self._current

    def _renumber(self) -> None:
        for index, queued in enumerate(self._queue, start=1):
            queued.position = index

    def _cancelled(self, job: Job) -> None:
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                self._renumber()
                job._finish("cancelled")

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job = self._queue.pop(0)
                self._renumber()
                self._current = job
            try:
                _run_in_process(job)
            except Exception as error:  # never let one run stop the queue
                if job.active:
                    job._finish("failed", f"the run could not start: {error}")
            finally:
                with self._lock:
                    self._current = None


RUNNER = Runner()


_server_lock = threading.Lock()


def _context() -> Any:
    """A process context that starts runs fast: a fork server that has torch and transformers imported.

    Forking the app itself is unsafe (its threads, and CUDA once initialised); ``spawn`` would import
    torch afresh for every run (seconds). Where there is no fork server (Windows), spawn it is. As with
    any multiprocessing, a script that calls :func:`start` needs ``if __name__ == "__main__":``.
    """
    import multiprocessing

    from lab import device

    # On a GPU machine the preloaded modules initialise CUDA in the fork server (bitsandbytes does, when
    # peft imports it), and a forked child cannot use CUDA after that: such runs start with spawn.
    if "forkserver" not in multiprocessing.get_all_start_methods() or device.select().kind == "cuda":
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "peft", "lab.finetune_worker"])
    with _server_lock:
        # OpenMP reads its wait policy once, when torch loads in the fork server. Spinning threads
        # (the default) slow training tenfold when the cores are shared with the app or other jobs.
        added = "OMP_WAIT_POLICY" not in os.environ
        if added:
            os.environ["OMP_WAIT_POLICY"] = WORKER_ENV["OMP_WAIT_POLICY"]
        try:
            forkserver.ensure_running()
        finally:
            if added:
                del os.environ["OMP_WAIT_POLICY"]
    return context


WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def _run_in_process(job: Job) -> None:
    """Start ``job``'s process, relay its events into the job, and enforce cancel and crash handling."""
    import queue as queue_module

    from lab import finetune_worker

    context = _context()
    events = context.Queue()
    stop = context.Event()
    with job._done:
        job.status, job.phase, job.position = "running", "starting", 0
        job.started = time.time()
    job._log("starting the training process")
    process = context.Process(
        target=finetune_worker.main,
        args=(
            job.config.to_dict(),
            str(job.output_dir),
            job.method,
            events,
            stop,
            {**WORKER_ENV, **os.environ},
        ),
        name=f"finetune-{job.id}",
        daemon=True,
    )
    if job.cancel_requested:
        job._finish("cancelled")
        return
    process.start()
    job.pid = process.pid
    outcome: dict[str, Any] | None = None
    cancel_at: float | None = None
    terminated = False
    while True:
        try:
            event = events.get(timeout=0.2)
        except queue_module.Empty:
            event = None
        if event is not None:
            if event.get("type") == "end":
                outcome = event
            else:
                job._event(event)
        elif not process.is_alive():
            break
        if job.cancel_requested:
            now = time.monotonic()
            if cancel_at is None:
                cancel_at = now
                stop.set()
                job._log("cancelling …")
            elif not terminated and now - cancel_at > CANCEL_GRACE_S:
                # Still busy (loading weights, a long step): end the process; its memory goes with it.
                process.terminate()
                terminated = True
            elif terminated and now - cancel_at > CANCEL_GRACE_S + 2:
                process.kill()
    process.join(timeout=5)
    while True:  # events sent just before the process ended
        try:
            event = events.get_nowait()
        except (queue_module.Empty, OSError, EOFError, ValueError):
            break
        if event.get("type") == "end":
            outcome = event
        else:
            job._event(event)
    events.close()
    events.cancel_join_thread()
    if outcome is not None and outcome.get("status") == "done":
        job._finish("done")  # finished before a late cancel reached it: keep the result
    elif job.cancel_requested:
        job._finish("cancelled")
    elif outcome is not None:
        job._finish("failed", outcome.get("message") or "the training process failed")
    else:
        code = process.exitcode
        why = (
            "it was killed (probably out of memory)"
            if code in (-9, 137)
            else f"it ended with exit code {code} without a result"
        )
        job._finish("failed", f"The training process crashed: {why}. The app is unaffected.")


def start(config: FineTuneConfig, runner: Runner | None = None) -> Job:
    """Check ``config``, estimate it, create its run folder and queue it; returns at once.

    Raises:
        ValueError: a bad setting or data set, a model that is not a causal LM, a full disk or queue.
        ModelUnavailable, DatasetUnavailable: the model or the data cannot be had here.
    """
    runner = runner or RUNNER
    run_plan = plan(config)
    parent = runs_dir(config.output_dir)
    check_disk_space(parent, output_bytes(config, run_plan.facts))
    folder = new_run_dir(config.output_dir)
    settings = {
        "config": config.to_dict(),
        "method": run_plan.method,
        "method_title": run_plan.method_title,
        "device": run_plan.device,
        "total_steps": run_plan.total_steps,
        "train_examples": run_plan.train_examples,
        "eval_examples": run_plan.eval_examples,
        "truncated": run_plan.truncated,
        "trainable_parameters": run_plan.trainable,
        "total_parameters": run_plan.facts.parameters,
        "estimated_seconds": round(run_plan.seconds, 1),
        "estimated_memory_bytes": run_plan.memory_bytes,
        "data_source": run_plan.source,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    job = Job(config, run_plan, folder, runner)
    return runner.submit(job)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def get_job(job_id: str) -> Job | None:
    """A job of this process by id (queued, running or finished)."""
    return RUNNER.get(job_id)


# -- after the run: base and fine-tuned side by side -----------------------------------------------------


def _base_of(adapter_dir: Path, base_model: str | None) -> str:
    if base_model:
        return base_model
    settings = adapter_dir.parent / "settings.json"
    if settings.is_file():
        return json.loads(settings.read_text())["config"]["base_model"]
    return json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]


def _prompt_ids(tokenizer: Any, model_id: str, prompt: str) -> list[int]:
    template = chat_template(tokenizer, model_id)
    text = render_chat(tokenizer, [{"role": "user", "content": prompt}], template, generation_prompt=True)
    return encode_text(tokenizer, text)


def _stream(network: Any, tokenizer: Any, ids: list[int], max_new_tokens: int) -> Iterator[str]:
    import torch
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = torch.tensor([ids], device=network.device)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                network.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    streamer=streamer,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
        except BaseException as error:  # raised in the caller's thread below
            errors.append(error)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    worker.join()
    if errors:
        raise errors[0]


def generate_pair_stream(
    prompt: str, base_model: str | None, adapter_dir: str | Path, max_new_tokens: int = 64
) -> Iterator[tuple[str, str]]:
    """Greedy answers of the base model, then of base + adapter (merged), as ``(base, tuned)`` so far.

    ``base_model`` may be None: the run's ``settings.json`` names it.
    """
    if not (prompt or "").strip():
        raise ValueError("Type a prompt first.")
    if not 1 <= int(max_new_tokens) <= 1024:
        raise ValueError("New tokens must be 1 to 1,024.")
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json).")
    model_id, path = model_and_path(_base_of(adapter_dir, base_model))
    tokenizer = models.tokenizer(model_id, path)
    ids = _prompt_ids(tokenizer, model_id, prompt)
    base_text = ""
    with models.causal_lm(model_id, path) as network:
        for base_text in _stream(network, tokenizer, ids, int(max_new_tokens)):
            yield base_text, ""
    with models.causal_lm_with_adapter(model_id, adapter_dir, path) as network:
        for tuned_text in _stream(network, tokenizer, ids, int(max_new_tokens)):
            yield base_text, tuned_text


def generate_pair(
    prompt: str, base_model: str | None, adapter_dir: str | Path, max_new_tokens: int = 64
) -> tuple[str, str]:
    """The same prompt through the base model and the fine-tuned one (greedy): ``(base_text, tuned_text)``."""
    pairs = generate_pair_stream(prompt, base_model, adapter_dir, max_new_tokens)
    last = ("", "")
    for last in pairs:  # noqa: B007 (only the final pair matters)
        continue
    return last
