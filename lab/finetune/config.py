"""A fine-tune run's settings: :class:`FineTuneConfig`, its checks, the presets, and the form and API readers.

The defaults are the book's hyper-parameters on the offline model and data. A config is checked without
loading anything (:meth:`FineTuneConfig.validate`); every refusal is an :class:`~lab.errors.InputError`
whose message says what to change.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lab import catalog, device
from lab.errors import InputError

SMOLLM2 = catalog.SMOLLM2
BOOK_MODEL = catalog.TINYLLAMA_BASE
BOOK_TEMPLATE_MODEL = catalog.TINYLLAMA_CHAT
DATASETS = ("wikipedia-instruct", "ultrachat")
BOOK_TARGET_MODULES = ("k_proj", "gate_proj", "v_proj", "up_proj", "q_proj", "o_proj", "down_proj")
BOOK_PROMPT = "Tell me something about Large Language Models."
SCHEDULERS = ("cosine", "linear", "constant")
Method = Literal["qlora-4bit", "lora-fp32", "lora-bf16", "lora-fp16"]
METHOD_TITLES = {
    "qlora-4bit": "QLoRA 4-bit NF4",
    "lora-fp32": "LoRA fp32",
    "lora-bf16": "LoRA bf16",
    "lora-fp16": "LoRA fp16",
}
CLASSROOM_MAX_STEPS = 60  # a classroom server caps every run, so one student cannot hold the queue
BOOK_PRESET = "Book (GPU)"
QUICK_PRESET = "Classroom quick (CPU)"
SERVER_SET = ("output_dir", "step_cap", "device")  # settings a web client may not choose

# What each setting is called in messages (and, lower-cased, on the form).
TITLES = {
    "base_model": "Base model",
    "dataset": "Data set",
    "max_examples": "Training examples",
    "eval_examples": "Held-out examples",
    "epochs": "Epochs",
    "max_steps": "Max steps",
    "step_cap": "The step cap",
    "r": "LoRA rank r",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "target_modules": "Target modules",
    "learning_rate": "Learning rate",
    "lr_scheduler": "Scheduler",
    "warmup_ratio": "Warm-up ratio",
    "batch_size": "Batch size",
    "grad_accum": "Gradient accumulation",
    "max_seq_length": "Max sequence length",
    "answers_only": "Loss on answers only",
    "gradient_checkpointing": "Gradient checkpointing",
    "quantize_4bit": "4-bit",
    "merge": "Merge",
    "output_dir": "The output folder",
    "seed": "Seed",
    "eval_steps": "Eval steps",
    "device": "Device",
    "cpu_threads": "CPU threads",
}


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
        answers_only: count the loss on the assistant's turns only (the prompt masked); the book's
            SFTTrainer on rendered text counts every token, which is the default.
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
    answers_only: bool = False
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
            raise InputError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if "target_modules" in values:
            modules = values["target_modules"]
            values["target_modules"] = tuple([modules] if isinstance(modules, str) else modules or ())
        return cls(**values)

    def validate(self) -> None:
        """Check the types and numbers without loading anything; raises InputError with what to change."""
        _check_types(self)

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise InputError(message)

        check(bool(self.base_model.strip()), "Choose a base model.")
        check(bool(self.dataset.strip()), "Choose a data set.")
        check(self.r > 0, f"LoRA rank r must be a whole number above 0, not {self.r}.")
        check(self.r <= 1024, f"LoRA rank r={self.r} is larger than any sensible adapter (at most 1024).")
        check(self.lora_alpha > 0, f"LoRA alpha must be above 0, not {self.lora_alpha}.")
        check(0 <= self.lora_dropout < 1, f"LoRA dropout must be in [0, 1), not {self.lora_dropout}.")
        check(
            1e-6 <= self.learning_rate <= 1e-2,
            f"Learning rate {self.learning_rate:g} is out of range: use 1e-6 to 1e-2 "
            "(the book uses 2e-4; above 1e-2 the adapter diverges).",
        )
        check(self.lr_scheduler in SCHEDULERS, f"Scheduler must be one of {', '.join(SCHEDULERS)}.")
        check(0 <= self.warmup_ratio < 1, "Warm-up ratio must be in [0, 1).")
        check(1 <= self.batch_size <= 64, "Batch size must be 1 to 64.")
        check(1 <= self.grad_accum <= 256, "Gradient accumulation: 1 to 256.")
        check(
            16 <= self.max_seq_length <= 32_768,
            f"Max sequence length must be 16 to 32,768 tokens, not {self.max_seq_length}.",
        )
        check(1 <= self.max_examples <= 200_000, "Examples must be 1 to 200,000.")
        check(0 <= self.eval_examples <= 2_000, "Eval examples: 0 to 2,000.")
        check(0 < self.epochs <= 100, f"Epochs must be above 0 and at most 100, not {self.epochs}.")
        check(0 <= self.max_steps <= 1_000_000, "Max steps must be 0 or more.")
        check(self.step_cap >= 0, "The step cap must be 0 or more.")
        check(self.eval_steps >= 0, "Eval steps must be 0 or more.")
        check(self.cpu_threads >= 0, "CPU threads must be 0 (all) or more.")
        check(len(self.target_modules) > 0, "Choose at least one target module for the LoRA adapter.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# The kind of value each declared field type holds, with the words a refusal uses.
_KINDS: dict[str, tuple[Any, str]] = {
    "int": (_is_int, "a whole number"),
    "float": (_is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "text"),
    "str | None": (lambda v: v is None or isinstance(v, str), "text or nothing"),
    "tuple[str, ...]": (lambda v: isinstance(v, tuple) and all(isinstance(s, str) for s in v), "names"),
}


def _check_types(config: FineTuneConfig) -> None:
    """Refuse a value of the wrong kind (a seed of "x") before any comparison could fail on it."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        test, words = _KINDS[str(item.type)]
        if not test(value):
            raise InputError(f"{TITLES[item.name]} must be {words}, not {value!r}.")


PRESETS: dict[str, FineTuneConfig] = {
    BOOK_PRESET: FineTuneConfig.book(),
    QUICK_PRESET: FineTuneConfig.classroom(),
}


def default_preset() -> str:
    """The book's preset on a CUDA machine, the quick one elsewhere (imports torch: call it late)."""
    return BOOK_PRESET if device.select().kind == "cuda" else QUICK_PRESET


def model_ids() -> list[str]:
    """The fine-tune's models: SmolLM2 and the book's TinyLlamas first, then the catalog's other decoders."""
    first = [SMOLLM2, BOOK_MODEL, BOOK_TEMPLATE_MODEL]
    others = sorted(
        (e for e in catalog.CATALOG.values() if e.kind == "causal-lm" and e.id not in first),
        key=lambda e: e.memory_mb,
    )
    return first + [e.id for e in others]


def model_and_path(base_model: str) -> tuple[str, str | None]:
    """Split ``base_model`` into the id the lab knows it by and a local folder, if it is one."""
    candidate = Path(base_model).expanduser()
    if base_model.startswith(("/", "./", "../", "~")) or candidate.is_dir():
        return base_model, str(candidate)
    return base_model, None


def from_form(values: dict[str, Any], step_cap: int = 0) -> FineTuneConfig:
    """A config from a form's values by field name (numbers arrive as floats, an upload as a path).

    ``values`` holds config field names, plus ``"upload"``: the file used when ``dataset`` is ``"upload"``.
    """
    values = dict(values)
    upload = values.pop("upload", None)
    if values.get("dataset") == "upload":
        if not upload:
            raise InputError("Upload a JSONL file of chats first, or pick another data set.")
        values["dataset"] = str(upload)
    types = {f.name: str(f.type) for f in dataclasses.fields(FineTuneConfig)}
    for name, value in values.items():
        kind = types.get(name)
        if kind == "int":
            if not _is_number(value) or float(value) != int(value):
                raise InputError(f"{TITLES[name]} must be a whole number, not {value!r}.")
            values[name] = int(value)
        elif kind == "float":
            values[name] = float(value or 0)
        elif kind == "bool":
            values[name] = bool(value)
    return FineTuneConfig.from_dict({**values, "step_cap": step_cap})


def from_request(
    preset: str, changes: dict[str, Any] | None, jsonl: str = "", step_cap: int = 0
) -> FineTuneConfig:
    """A config from a web client: a preset, ``changes`` to its fields, and optionally chats as JSONL text.

    The server decides ``output_dir``, ``step_cap`` and ``device``; a data set is named, or sent as
    ``jsonl`` (written to a temporary file), never a path on the server.
    """
    if preset not in PRESETS:
        raise InputError(f"Unknown preset {preset!r}: use one of {', '.join(PRESETS)}.")
    changes = dict(changes or {})
    dataset = changes.get("dataset")
    if dataset is not None and dataset not in DATASETS:
        raise InputError(
            "dataset must be 'wikipedia-instruct' or 'ultrachat'; send your own chats as `jsonl`."
        )
    for key in SERVER_SET:
        if key in changes:
            raise InputError(f"{key} is set by the server, not by the API.")
    config = FineTuneConfig.from_dict({**PRESETS[preset].to_dict(), **changes, "step_cap": step_cap})
    if jsonl.strip():
        upload = Path(tempfile.mkdtemp(prefix="lab-jsonl-")) / "chats.jsonl"
        upload.write_text(jsonl, encoding="utf-8")
        config = config.replace(dataset=str(upload))
    return config
