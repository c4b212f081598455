"""The training process of one fine-tune run: ``python -m lab.finetune.worker RUN_DIR``.

:func:`lab.finetune.start` writes the run folder's ``settings.json`` and launches this command in a
process of its own (never the app's), so an out-of-memory error or a crash never takes the app down; a
script, a notebook or a cluster scheduler can launch the same command on a run folder. It reads the
config and method from ``settings.json``, appends its events to ``events.jsonl`` (phase, one per step with
the loss and learning rate, log lines; always ending with ``{"type": "end", "status": …}``), writes
``metrics.json`` and the adapter, and stops at the next micro-batch once the folder holds a ``cancel`` file
(:mod:`lab.finetune.runs`).

It loads the base model (4-bit NF4 through bitsandbytes for QLoRA, else in the device's precision), wraps
it with a LoRA adapter (peft), and trains with a plain PyTorch loop that follows the book's SFTTrainer
settings: AdamW (bitsandbytes' paged 32-bit AdamW on CUDA, as the book's ``paged_adamw_32bit``), the
chosen schedule without warm-up, gradient accumulation, gradient clipping at 1.0 (Trainer's default), fp16
or bf16 autocast on CUDA, gradient checkpointing, loss over every token of the rendered chat.

A plain loop rather than trl's ``SFTTrainer``: the lab needs a cancel check between micro-batches, a
held-out loss at chosen steps and one event per step, and trl would add a dependency for none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from lab import device, models
from lab.catalog import ModelUnavailable
from lab.errors import LabError
from lab.finetune.config import METHOD_TITLES, FineTuneConfig, model_and_path
from lab.finetune.data import chat_template, load_conversations, tokenize
from lab.finetune.estimate import eval_every, steps_for
from lab.finetune.runs import METRICS, EventLog, cancel_requested, read_settings

Send = Callable[..., None]
ShouldStop = Callable[[], bool]
LOAD_DELAY_ENV = "LAB_FINETUNE_TEST_LOAD_DELAY"  # tests: seconds of blocking "loading" to cancel during


class Cancelled(Exception):
    """The run was asked to stop."""


def main(argv: list[str] | None = None) -> int:
    """Train the run in ``RUN_DIR``; always ends its events with one ``end`` event. Returns the exit code.

    ``--parent PID``: also stop, as if cancelled, once process PID (the app that launched it) is gone.
    """
    parser = argparse.ArgumentParser(prog="python -m lab.finetune.worker", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding settings.json")
    parser.add_argument("--parent", type=int, default=None, help="stop when this process has ended")
    args = parser.parse_args(argv)
    folder: Path = args.run_dir
    events = EventLog(folder)

    def send(**event: Any) -> None:
        events.append(event)

    def should_stop() -> bool:
        return cancel_requested(folder) or (args.parent is not None and os.getppid() != args.parent)

    try:
        config, method = read_settings(folder)
        train(config, folder, method, send, should_stop)
        send(type="end", status="done")
    except Cancelled:
        send(type="end", status="cancelled")
    except BaseException as error:  # the app shows the message; the traceback goes to the run's log
        message = describe_error(error)
        send(type="log", text=traceback.format_exc())
        send(type="error", message=message)
        send(type="end", status="failed", message=message)
        return 1
    return 0


def describe_error(error: BaseException) -> str:
    """A message for people: out of memory says what to lower; the lab's own errors keep their text."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return (
            "Out of memory while training: lower the batch size, the max sequence length or r, turn on "
            "gradient checkpointing, or tick 4-bit. The app is unaffected."
        )
    if isinstance(error, LabError | ModelUnavailable | ValueError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _check(should_stop: ShouldStop) -> None:
    if should_stop():
        raise Cancelled


Example = tuple[list[int], list[bool] | None]  # token ids, and per token whether it counts for the loss


def _batches(data: list[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Shuffled batches, epoch after epoch, with a fixed seed (as Trainer's random sampler)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield [data[i] for i in order[start : start + batch_size]]


def _examples(ids: list[list[int]], counts: list[list[bool]] | None) -> list[Example]:
    return list(zip(ids, counts if counts is not None else [None] * len(ids), strict=True))


def _collate(rows: list[Example], pad_id: int, device_name: str) -> dict[str, Any]:
    """Right-padded ids, their mask, and labels that ignore the padding and masked tokens (-100).

    Padding is found by the attention mask, never by the pad id: many tokenizers pad with their
    end-of-text token, and labels masked by id would hide every answer's end from the model.
    """
    width = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    counted = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, counts) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        counted[i, : len(row)] = True if counts is None else torch.tensor(counts, dtype=torch.bool)
    labels = ids.masked_fill(~counted, -100)
    return {
        "input_ids": ids.to(device_name),
        "attention_mask": mask.to(device_name),
        "labels": labels.to(device_name),
    }


def _peak_memory(device_name: str) -> int:
    if device_name.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource  # POSIX only
    except ImportError:
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # kilobytes on Linux


def train(cfg: FineTuneConfig, folder: Path, method: str, send: Send, stop: ShouldStop) -> None:
    """Train one run into ``folder`` (see the module docstring); raises :class:`Cancelled` when stopped."""
    started = time.time()
    placement = device.select(cfg.device)
    cuda = placement.kind == "cuda"
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    send(type="phase", phase="loading")
    model_id, path = model_and_path(cfg.base_model)
    tokenizer = models.tokenizer(model_id, path)
    chats = load_conversations(cfg.dataset, cfg.max_examples, cfg.eval_examples, cfg.seed)
    template = chat_template(tokenizer, model_id)
    data = tokenize(tokenizer, chats, template, cfg.max_seq_length, cfg.answers_only)
    train, held_out = _examples(data.train, data.train_loss), _examples(data.eval, data.eval_loss)
    total = steps_for(cfg, len(data.train))
    every = eval_every(cfg, total)
    send(
        type="log",
        text=f"data: {len(data.train):,} training and {len(data.eval):,} held-out conversations from "
        f"{chats.source}, {data.train_tokens:,} tokens; {data.truncated + data.eval_truncated:,} "
        f"truncated to {cfg.max_seq_length} tokens"
        + (f"; {chats.skipped:,} lines skipped" if chats.skipped else ""),
    )
    _check(stop)
    delay = float(os.environ.get(LOAD_DELAY_ENV, "0") or 0)
    if delay:
        time.sleep(delay)  # stands in for a long, uninterruptible weight load
    quantized = method == "qlora-4bit"
    send(type="log", text=f"loading {model_id} on {placement.device} ({METHOD_TITLES[method]})")
    model = models.causal_lm_for_training(
        model_id, path, quantize_4bit=quantized, device_name=placement.device
    )
    _check(stop)
    model.config.use_cache = False  # the KV cache is for generation; training recomputes everything
    checkpointing = {"use_reentrant": False}  # works with frozen inputs, unlike the re-entrant variant
    if quantized:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
        target_modules=list(cfg.target_modules),
    )
    model = get_peft_model(model, lora)
    trainable, every_parameter = model.get_nb_trainable_parameters()
    send(type="plan", total_steps=total, trainable=trainable, method=method)
    send(
        type="log",
        text=f"trainable params: {trainable:,} || all params: {every_parameter:,} || "
        f"trainable%: {100 * trainable / every_parameter:.4f}",
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    if quantized and cuda:
        import bitsandbytes

        optimizer = bitsandbytes.optim.PagedAdamW32bit(parameters, lr=cfg.learning_rate, weight_decay=0.0)
        send(type="log", text="optimizer: paged AdamW 32-bit (bitsandbytes), as the book")
    else:
        optimizer = torch.optim.AdamW(parameters, lr=cfg.learning_rate, weight_decay=0.0)
    warmup = math.ceil(cfg.warmup_ratio * total)
    scheduler = transformers.get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total
    )
    compute = placement.dtype if cuda else None
    scaler = torch.amp.GradScaler("cuda") if compute == torch.float16 else None

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=compute) if compute is not None else contextlib.nullcontext()

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    batches = _batches(train, cfg.batch_size, cfg.seed)
    losses, eval_losses, rates, norms = [], [], [], []
    tokens = 0

    def evaluate(step: int) -> None:
        model.eval()
        summed, counted = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(held_out), cfg.batch_size):
                _check(stop)
                batch = _collate(held_out[start : start + cfg.batch_size], pad_id, placement.device)
                with autocast():
                    out = model(**batch)
                # mean over the batch's predicted tokens → sum, so the whole set is token-weighted
                predicted = int((batch["labels"][:, 1:] != -100).sum())
                summed += float(out.loss.detach()) * predicted
                counted += predicted
        model.train()
        value = summed / max(1, counted)
        eval_losses.append((step, value))
        send(type="eval", step=step, loss=value)
        send(type="log", text=f"step {step}/{total}: eval loss {value:.4f}")

    send(type="phase", phase="training")
    training_started = time.time()
    log_every = max(1, total // 50)
    model.train()
    for step in range(1, total + 1):
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            _check(stop)
            batch = _collate(next(batches), pad_id, placement.device)
            with autocast():
                out = model(**batch)
            loss = out.loss / cfg.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            step_loss += float(out.loss.detach()) / cfg.grad_accum
            tokens += int(batch["attention_mask"].sum())
        if scaler:
            scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, 1.0))
        rate = scheduler.get_last_lr()[0]  # the rate this step used
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append((step, step_loss))
        rates.append((step, rate))
        norms.append((step, norm))
        send(type="step", step=step, loss=step_loss, lr=rate, tokens=tokens, grad_norm=norm)
        if step <= 3 or step % log_every == 0 or step == total:
            send(
                type="log",
                text=f"step {step}/{total}: loss {step_loss:.4f}, lr {rate:.2e}, grad norm {norm:.3f}",
            )
        if data.eval and (step % every == 0 or step == total):
            evaluate(step)
    train_seconds = time.time() - training_started

    send(type="phase", phase="saving")
    adapter_dir = folder / "adapter"
    model.save_pretrained(adapter_dir, safe_serialization=True)
    tokenizer.chat_template = template  # the template it was trained with travels with the adapter
    tokenizer.save_pretrained(adapter_dir)
    metrics = {
        "method": method,
        "device": placement.device,
        "steps": total,
        "losses": losses,
        "eval_losses": eval_losses,
        "learning_rates": rates,
        "grad_norms": norms,
        "train_tokens": tokens,
        "trainable_parameters": trainable,
        "all_parameters": every_parameter,
        "train_seconds": round(train_seconds, 2),
        "seconds": round(time.time() - started, 2),
        "steps_per_second": total / train_seconds if train_seconds else None,
        "tokens_per_second": tokens / train_seconds if train_seconds else None,
        "peak_memory_bytes": _peak_memory(placement.device),
        "truncated": data.truncated + data.eval_truncated,
    }
    (folder / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    send(type="log", text=f"saved the adapter to {adapter_dir}")
    if cfg.merge:
        _check(stop)
        send(type="phase", phase="merging")
        del model, optimizer
        gc.collect()
        merged = models.causal_lm_merged(model_id, adapter_dir, path, device_name=placement.device)
        merged.save_pretrained(folder / "merged", safe_serialization=True)
        tokenizer.save_pretrained(folder / "merged")
        send(type="log", text=f"merged the adapter into a 16-bit copy of the model: {folder / 'merged'}")
    send(type="phase", phase="done")


if __name__ == "__main__":
    sys.exit(main())
