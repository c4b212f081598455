"""Chapter 12: instruction-tune a causal LM with QLoRA (or LoRA), from a notebook or from the app.

The book fine-tunes TinyLlama on 3,000 UltraChat conversations with a 4-bit NF4 base model and a LoRA
adapter (r=64, alpha=32, dropout 0.1, seven projection layers), 375 steps on a T4. This package runs the
same recipe, on any causal LM of the catalog, with three data sources: ``"wikipedia-instruct"``
(offline), ``"ultrachat"`` (the book's, from the Hub) or a JSONL file of chats.

- prepare (pure, in the caller's process): :mod:`~lab.finetune.config` (:class:`FineTuneConfig`, its
  checks, the presets), :mod:`~lab.finetune.data` (chats, chat template, tokens, :func:`preview`),
  :mod:`~lab.finetune.facts` (the model's linear layers from its config, no weights) and
  :mod:`~lab.finetune.estimate` (method, steps, memory and time: :func:`plan`);
- forward: :func:`start` (:mod:`~lab.finetune.jobs`) queues a run; one run at a time trains in its own
  process, ``python -m lab.finetune.worker RUN_DIR`` (:mod:`~lab.finetune.worker`), which talks to the app
  through its run folder (:mod:`~lab.finetune.runs`); :meth:`Job.cancel` ends it within seconds, memory
  included; :func:`generate_pair` (:mod:`~lab.finetune.compare`) answers one prompt with the base model and
  the fine-tuned one;
- present: :mod:`~lab.finetune.view` (the preview, the plan, the progress bar, the loss curve), and
  :func:`zip_run` packs a run folder.

Usage (a script needs no ``if __name__ == "__main__":`` guard)::

    from lab import finetune

    job = finetune.start(finetune.FineTuneConfig.classroom(max_steps=12))
    result = job.wait()
    print(result.method, result.losses[:3], result.adapter_dir)
    print(finetune.generate_pair(finetune.BOOK_PROMPT, result.base_model, result.adapter_dir))
"""

from __future__ import annotations

from lab.finetune.compare import base_model_of, generate_pair, generate_pair_stream
from lab.finetune.config import (
    BOOK_MODEL,
    BOOK_PRESET,
    BOOK_PROMPT,
    BOOK_TARGET_MODULES,
    BOOK_TEMPLATE_MODEL,
    CLASSROOM_MAX_STEPS,
    DATASETS,
    METHOD_TITLES,
    PRESETS,
    QUICK_PRESET,
    SCHEDULERS,
    SMOLLM2,
    FineTuneConfig,
    Method,
    default_preset,
    from_form,
    from_request,
    model_and_path,
    model_ids,
)
from lab.finetune.data import (
    ROLES,
    TINYLLAMA_CHAT_TEMPLATE,
    ULTRACHAT_REPO,
    ULTRACHAT_SPLIT,
    WIKIPEDIA_FILE,
    Conversations,
    DatasetPreview,
    DatasetUnavailable,
    Messages,
    PreviewExample,
    Tokenized,
    chat_template,
    encode_text,
    load_conversations,
    preview,
    read_jsonl,
    render_chat,
    tokenize,
    ultrachat_indices,
)
from lab.finetune.estimate import (
    CPU_TRAINING_FLOPS_PER_CORE,
    GPU_TRAINING_EFFICIENCY,
    QLORA_SLOWDOWN,
    Plan,
    bitsandbytes_4bit,
    choose_method,
    estimate_memory,
    estimate_seconds,
    eval_every,
    plan,
    steps_for,
)
from lab.finetune.facts import LinearLayer, ModelFacts, NotCausalLM, check_against_model, model_facts
from lab.finetune.jobs import (
    ACTIVE,
    CANCEL_GRACE_S,
    MAX_QUEUED,
    RUNNER,
    WORKER_ENV,
    FineTuneError,
    Job,
    Runner,
    RunResult,
    Status,
    get_job,
    owned_job,
    run_folder,
    start,
)
from lab.finetune.runs import (
    RUN_ID,
    check_disk_space,
    new_run_dir,
    output_bytes,
    run_dir,
    runs_dir,
    zip_run,
)
from lab.finetune.view import PREVIEW_STYLE, preview_html

__all__ = [
    # compare
    "base_model_of",
    "generate_pair",
    "generate_pair_stream",
    # config
    "BOOK_MODEL",
    "BOOK_PRESET",
    "BOOK_PROMPT",
    "BOOK_TARGET_MODULES",
    "BOOK_TEMPLATE_MODEL",
    "CLASSROOM_MAX_STEPS",
    "DATASETS",
    "METHOD_TITLES",
    "PRESETS",
    "QUICK_PRESET",
    "SCHEDULERS",
    "SMOLLM2",
    "FineTuneConfig",
    "Method",
    "default_preset",
    "from_form",
    "from_request",
    "model_and_path",
    "model_ids",
    # data
    "ROLES",
    "TINYLLAMA_CHAT_TEMPLATE",
    "ULTRACHAT_REPO",
    "ULTRACHAT_SPLIT",
    "WIKIPEDIA_FILE",
    "Conversations",
    "DatasetPreview",
    "DatasetUnavailable",
    "Messages",
    "PreviewExample",
    "Tokenized",
    "chat_template",
    "encode_text",
    "load_conversations",
    "preview",
    "read_jsonl",
    "render_chat",
    "tokenize",
    "ultrachat_indices",
    # estimate
    "CPU_TRAINING_FLOPS_PER_CORE",
    "GPU_TRAINING_EFFICIENCY",
    "QLORA_SLOWDOWN",
    "Plan",
    "bitsandbytes_4bit",
    "choose_method",
    "estimate_memory",
    "estimate_seconds",
    "eval_every",
    "plan",
    "steps_for",
    # facts
    "LinearLayer",
    "ModelFacts",
    "NotCausalLM",
    "check_against_model",
    "model_facts",
    # jobs
    "ACTIVE",
    "CANCEL_GRACE_S",
    "MAX_QUEUED",
    "RUNNER",
    "WORKER_ENV",
    "FineTuneError",
    "Job",
    "Runner",
    "RunResult",
    "Status",
    "get_job",
    "owned_job",
    "run_folder",
    "start",
    # runs
    "RUN_ID",
    "check_disk_space",
    "new_run_dir",
    "output_bytes",
    "run_dir",
    "runs_dir",
    "zip_run",
    # view
    "PREVIEW_STYLE",
    "preview_html",
]
