"""Tab 6, chapter 12: instruction-tune a small chat model with (Q)LoRA, live, from the browser."""

from __future__ import annotations

import asyncio
import html
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import gradio as gr

from lab import catalog, finetune
from lab.config import Settings
from tabs.common import CPU_EVENT, GPU_EVENT, check_allowed, model_choices, user_errors

log = logging.getLogger(__name__)

INTRO = """
### Chapter 12 · Fine-tuning a chat model with QLoRA
The book instruction-tunes **TinyLlama** on 3,000 **UltraChat** conversations: the base model is loaded in
**4-bit NF4** (the *Q*), frozen, and only a small **LoRA** adapter (r=64 on seven projection layers) learns;
375 steps took 12:45 on a free T4 and the loss fell from 1.67 to about 1.4. Here you run the same recipe:
pick a preset, look at the data as the model reads it, check what it will cost, then watch the loss fall
and compare the answers before and after. Runs train in their own process, one at a time (others wait in
a queue and see their place), and each keeps its own folder with the adapter, its settings and metrics.
"""

BOOK = "Book (GPU)"
QUICK = "Classroom quick (CPU)"
DATASET_CHOICES = [
    ("Wikipedia instructions (offline, CC BY-SA)", "wikipedia-instruct"),
    ("UltraChat 200k, the book's (Hub)", "ultrachat"),
    ("My JSONL file (upload)", "upload"),
]
POLL_S = 1.0


def _model_ids() -> list[str]:
    """The fine-tune's models: SmolLM2 and the book's TinyLlama first, then the catalog's other decoders."""
    first = [finetune.SMOLLM2, finetune.BOOK_MODEL, finetune.BOOK_TEMPLATE_MODEL]
    others = sorted(
        (e for e in catalog.CATALOG.values() if e.kind == "causal-lm" and e.id not in first),
        key=lambda e: e.memory_mb,
    )
    return first + [e.id for e in others]


def default_preset() -> str:
    """The book's preset on a CUDA machine, the quick one elsewhere (asked when a page loads: importing
    the app must not import torch)."""
    from lab import device

    return BOOK if device.select().kind == "cuda" else QUICK


def method_line() -> str:
    """What this server can run, said before anyone starts: QLoRA 4-bit or plain LoRA, and where."""
    from lab import device

    placement = device.select()
    ok, why = finetune.bitsandbytes_4bit()
    if placement.kind == "cuda":
        four = "QLoRA 4-bit NF4 (bitsandbytes)" if ok else f"no 4-bit: {why}"
        return f"This server trains on **{placement.device}**: {four}, or LoRA in 16-bit."
    four = "4-bit NF4 is possible here too (bitsandbytes CPU kernels, slower)" if ok else f"no 4-bit: {why}"
    return (
        f"This server trains on the **CPU**: **LoRA fp32** is what the quick preset runs; {four}. "
        "The book's preset wants a CUDA GPU."
    )


# -- present: pure functions of a job's snapshot --------------------------------------------------


def loss_figure(snapshot: dict[str, Any] | None) -> Any:
    """Training loss per step (line and points), held-out loss, and the learning rate on a second axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(specs=[[{"secondary_y": True}]])
    losses = (snapshot or {}).get("losses") or []
    evals = (snapshot or {}).get("eval_losses") or []
    rates = (snapshot or {}).get("learning_rates") or []
    total = (snapshot or {}).get("total_steps") or 1
    figure.add_trace(
        go.Scatter(
            x=[s for s, _ in losses],
            y=[v for _, v in losses],
            mode="lines+markers",
            name="training loss",
            line={"color": "#0969da"},
            marker={"size": 5},
        ),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(
            x=[s for s, _ in evals],
            y=[v for _, v in evals],
            mode="lines+markers",
            name="held-out loss",
            line={"color": "#cf222e", "dash": "dot"},
            marker={"size": 8, "symbol": "diamond"},
        ),
        secondary_y=False,
    )
    figure.add_trace(
        go.Scatter(
            x=[s for s, _ in rates],
            y=[v for _, v in rates],
            mode="lines",
            name="learning rate",
            line={"color": "#8c959f", "width": 1},
        ),
        secondary_y=True,
    )
    step = (snapshot or {}).get("step", 0)
    figure.update_layout(
        title=f"Loss · step {step} / {total}" if snapshot else "Loss (starts when a run starts)",
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2},
        xaxis={"title": "optimizer step", "range": [0, max(total, 1) + 0.5]},
    )
    figure.update_yaxes(title_text="cross-entropy loss", secondary_y=False)
    figure.update_yaxes(title_text="learning rate", secondary_y=True, showgrid=False, tickformat=".2e")
    return figure


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_html(snapshot: dict[str, Any] | None) -> str:
    """A progress bar: step / total, percent, elapsed, ETA, phase and what runs."""
    if not snapshot:
        return "<div id='ft-bar' data-step='0' data-status='idle'></div>"
    step, total = snapshot["step"], max(1, snapshot["total_steps"])
    percent = 100 * step / total
    status = snapshot["status"]
    colour = {"failed": "#cf222e", "cancelled": "#9a6700", "done": "#1a7f37"}.get(status, "#0969da")
    where = f"position {snapshot['position']} in the queue" if status == "queued" else snapshot["phase"]
    return (
        f"<div id='ft-bar' data-step='{step}' data-total='{total}' data-status='{status}' "
        "style='font-family:ui-sans-serif,system-ui,sans-serif;font-size:13px'>"
        f"<div style='display:flex;justify-content:space-between'><b>{html.escape(status)}</b>"
        f"<span>step {step} / {total} · {percent:.0f} % · elapsed {_eta(snapshot['elapsed_s'])} · "
        f"ETA {_eta(snapshot['eta_s'])}</span></div>"
        "<div style='background:#eaeef2;border-radius:6px;height:12px;margin:4px 0'>"
        f"<div style='width:{percent:.1f}%;background:{colour};height:12px;border-radius:6px'></div></div>"
        f"<div style='color:#57606a'>{html.escape(where)} · {html.escape(snapshot['method_title'])}"
        + (f" · lr {snapshot['lr']:.2e}" if snapshot.get("lr") else "")
        + "</div></div>"
    )


def status_markdown(snapshot: dict[str, Any] | None) -> str:
    if not snapshot:
        return ""
    status = snapshot["status"]
    if status == "queued":
        ahead = snapshot["position"]
        return (
            f"⏳ **Queued: position {ahead}.** One run trains at a time on this server; "
            f"{ahead} run(s) start before yours. Run `{snapshot['job_id']}`."
        )
    if status == "running":
        return f"🏃 **Running** `{snapshot['job_id']}` ({snapshot['method_title']}): {snapshot['phase']}."
    if status == "done":
        last = snapshot["losses"][-1][1] if snapshot["losses"] else float("nan")
        first = snapshot["losses"][0][1] if snapshot["losses"] else float("nan")
        return (
            f"✅ **Done** `{snapshot['job_id']}`: {snapshot['step']} steps in {_eta(snapshot['elapsed_s'])}, "
            f"loss {first:.3f} → {last:.3f} ({snapshot['method_title']}). "
            f"Output: `{snapshot['output_dir']}`. Compare the answers below."
        )
    if status == "cancelled":
        return f"⏹ **Cancelled** `{snapshot['job_id']}` at step {snapshot['step']}; its memory is freed."
    return f"❌ **Failed** `{snapshot['job_id']}`: {snapshot['error']}"


def _download(output_dir: str) -> str:
    """A zip of the run in a temporary folder (Gradio serves files from there, not from the lab's cache)."""
    archive = finetune.zip_run(output_dir)
    target = Path(tempfile.mkdtemp(prefix="lab-run-")) / archive.name
    shutil.copyfile(archive, target)
    return str(target)


# -- the tab ---------------------------------------------------------------------------------------


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the fine-tune tab inside ``demo``: form, preview and plan, live run, before/after."""
    preset_name = QUICK  # switched to the book's preset on page load when a GPU is there
    preset = finetune.PRESETS[preset_name]
    gr.Markdown(INTRO)
    method_note = gr.Markdown(elem_id="ft-method")
    with gr.Row():
        preset_choice = gr.Radio(
            list(finetune.PRESETS), value=preset_name, label="Preset", elem_id="ft-preset", scale=2
        )
        model = gr.Dropdown(
            model_choices(_model_ids()),
            value=preset.base_model,
            label="Base model",
            allow_custom_value=not settings.classroom,
            elem_id="ft-model",
            scale=3,
        )
    with gr.Row():
        dataset = gr.Radio(
            DATASET_CHOICES, value=preset.dataset, label="Data set", elem_id="ft-dataset", scale=3
        )
        upload = gr.File(
            label="JSONL of chats ({'messages': [{'role', 'content'}, …]} per line)",
            file_types=[".jsonl", ".json", ".gz"],
            elem_id="ft-file",
            visible=preset.dataset == "upload",
            height=120,
            scale=2,
        )
    with gr.Accordion("LoRA adapter", open=True):
        with gr.Row():
            r = gr.Number(preset.r, label="r (rank)", precision=0, minimum=1, elem_id="ft-r")
            alpha = gr.Number(preset.lora_alpha, label="alpha", minimum=0, elem_id="ft-alpha")
            dropout = gr.Number(preset.lora_dropout, label="dropout", minimum=0, maximum=0.99)
        targets = gr.CheckboxGroup(
            list(finetune.BOOK_TARGET_MODULES),
            value=list(preset.target_modules),
            label="Target modules: the model's linear layers (the book's seven preselected)",
            elem_id="ft-targets",
        )
    with gr.Accordion("Training", open=False):
        with gr.Row():
            lr = gr.Number(preset.learning_rate, label="learning rate", elem_id="ft-lr")
            scheduler = gr.Dropdown(list(finetune.SCHEDULERS), value=preset.lr_scheduler, label="schedule")
            batch = gr.Number(preset.batch_size, label="batch size", precision=0, minimum=1)
            accum = gr.Number(preset.grad_accum, label="gradient accumulation", precision=0, minimum=1)
        with gr.Row():
            examples = gr.Number(preset.max_examples, label="training examples", precision=0, minimum=1)
            eval_examples = gr.Number(preset.eval_examples, label="held-out examples", precision=0, minimum=0)
            epochs = gr.Number(preset.epochs, label="epochs", minimum=0.01)
            max_steps = gr.Number(
                preset.max_steps, label="max steps (0: the epochs decide)", precision=0, minimum=0
            )
            max_length = gr.Number(
                preset.max_seq_length, label="max sequence length", precision=0, minimum=16
            )
        with gr.Row():
            checkpointing = gr.Checkbox(preset.gradient_checkpointing, label="gradient checkpointing")
            four_bit = gr.Checkbox(preset.quantize_4bit, label="4-bit NF4 base model (QLoRA)")
            merge = gr.Checkbox(preset.merge, label="merge into a 16-bit model after training")
            seed = gr.Number(preset.seed, label="seed", precision=0)
    if settings.classroom:
        gr.Markdown(
            f"This is a classroom server: every run stops after at most {finetune.CLASSROOM_MAX_STEPS} steps."
        )
    with gr.Row():
        check = gr.Button("Check: preview the data and estimate", elem_id="ft-check")
        start = gr.Button("Start training", variant="primary", elem_id="ft-start")
        cancel = gr.Button("Cancel", variant="stop", elem_id="ft-cancel")
    plan_box = gr.Markdown(elem_id="ft-plan")
    status = gr.Markdown(elem_id="ft-status")
    progress = gr.HTML(progress_html(None), elem_id="ft-progress")
    with gr.Row():
        plot = gr.Plot(elem_id="ft-loss", scale=3)  # drawn by the first status update (plotly loads then)
        logs = gr.Textbox(label="Log", lines=14, max_lines=14, autoscroll=True, elem_id="ft-logs", scale=2)
    download = gr.File(
        label="This run: adapter, settings and metrics (zip)", elem_id="ft-download", visible=False, height=80
    )
    with gr.Accordion("The data as the model reads it", open=False):
        preview_box = gr.HTML(elem_id="ft-preview")
    gr.Markdown(
        "### Before and after\nThe same prompt through the base model and through base + adapter (merged, "
        "as the book does), greedy decoding. The book's prompt is preset."
    )
    with gr.Row():
        prompt = gr.Textbox(finetune.BOOK_PROMPT, label="Prompt", elem_id="ft-prompt", scale=4)
        new_tokens = gr.Slider(8, 256, value=64, step=8, label="New tokens", scale=1)
        compare = gr.Button("Compare", elem_id="ft-compare", scale=1)
    with gr.Row():
        base_text = gr.Textbox(label="Base model", lines=6, elem_id="ft-base")
        tuned_text = gr.Textbox(label="Fine-tuned", lines=6, elem_id="ft-tuned")
    job_state = gr.State(None)
    run_state = gr.State(None)

    form = [
        model,
        dataset,
        upload,
        r,
        alpha,
        dropout,
        targets,
        lr,
        scheduler,
        batch,
        accum,
        examples,
        eval_examples,
        epochs,
        max_steps,
        max_length,
        checkpointing,
        four_bit,
        merge,
        seed,
    ]

    def config_from_form(
        model_id: str,
        dataset_name: str,
        upload_path: str | None,
        r_value: float,
        alpha_value: float,
        dropout_value: float,
        target_names: list[str],
        lr_value: float,
        schedule: str,
        batch_value: float,
        accum_value: float,
        examples_value: float,
        eval_value: float,
        epochs_value: float,
        steps_value: float,
        length_value: float,
        checkpointing_value: bool,
        four_bit_value: bool,
        merge_value: bool,
        seed_value: float,
    ) -> finetune.FineTuneConfig:
        check_allowed(model_id, settings)
        if dataset_name == "upload":
            if not upload_path:
                raise gr.Error("Upload a JSONL file of chats first, or pick another data set.")
            dataset_name = str(upload_path)

        def whole(value: float | None, name: str) -> int:
            if value is None or float(value) != int(float(value)):
                raise gr.Error(f"{name} must be a whole number.")
            return int(value)

        return finetune.FineTuneConfig(
            base_model=model_id,
            dataset=dataset_name,
            max_examples=whole(examples_value, "Training examples"),
            eval_examples=whole(eval_value, "Held-out examples"),
            epochs=float(epochs_value or 0),
            max_steps=whole(steps_value, "Max steps"),
            step_cap=finetune.CLASSROOM_MAX_STEPS if settings.classroom else 0,
            r=whole(r_value, "r"),
            lora_alpha=float(alpha_value or 0),
            lora_dropout=float(dropout_value or 0),
            target_modules=tuple(target_names or ()),
            learning_rate=float(lr_value or 0),
            lr_scheduler=schedule,
            batch_size=whole(batch_value, "Batch size"),
            grad_accum=whole(accum_value, "Gradient accumulation"),
            max_seq_length=whole(length_value, "Max sequence length"),
            gradient_checkpointing=bool(checkpointing_value),
            quantize_4bit=bool(four_bit_value),
            merge=bool(merge_value),
            seed=whole(seed_value, "Seed"),
        )

    def apply_preset(name: str) -> list[Any]:
        chosen = finetune.PRESETS[name]
        return [
            chosen.base_model,
            chosen.dataset,
            chosen.r,
            chosen.lora_alpha,
            chosen.lora_dropout,
            gr.update(value=list(chosen.target_modules)),
            chosen.learning_rate,
            chosen.lr_scheduler,
            chosen.batch_size,
            chosen.grad_accum,
            chosen.max_examples,
            chosen.eval_examples,
            chosen.epochs,
            chosen.max_steps,
            chosen.max_seq_length,
            chosen.gradient_checkpointing,
            chosen.quantize_4bit,
            chosen.merge,
            chosen.seed,
        ]

    preset_outputs = [c for c in form if c is not upload]  # a preset sets every field but the upload

    def linear_layers(model_id: str, chosen: list[str]) -> Any:
        """The model's linear layers as choices; keeps what still exists, else the book's seven."""
        try:
            check_allowed(model_id, settings)
            facts = finetune.model_facts(model_id)
        except (ValueError, catalog.ModelUnavailable, gr.Error) as error:
            gr.Warning(str(error)[:400])
            return gr.update()
        names = facts.target_choices
        kept = [n for n in (chosen or []) if n in names]
        default = [n for n in finetune.BOOK_TARGET_MODULES if n in names] or names[:2]
        return gr.update(choices=names, value=kept or default)

    @user_errors
    def check_run(*values: Any) -> tuple[str, str]:
        config = config_from_form(*values)
        chats = finetune.load_conversations(
            config.dataset, config.max_examples, config.eval_examples, config.seed
        )
        run_plan = finetune.plan(config, chats)
        shown = finetune.preview(config, 3, chats)
        return run_plan.summary(), finetune.preview_html(shown)

    def updates(job: finetune.Job, final: bool) -> tuple[Any, ...]:
        snap = job.snapshot(log_lines=200)
        zipped = (
            gr.update(value=_download(snap["output_dir"]), visible=True)
            if final and snap["status"] == "done"
            else gr.update()
        )
        return (
            job.id,
            status_markdown(snap),
            progress_html(snap),
            loss_figure(snap),
            "\n".join(snap["logs"]),
            zipped,
            job.id if final and snap["status"] == "done" else gr.update(),
        )

    @user_errors
    async def run(current: str | None, *values: Any) -> AsyncIterator[tuple[Any, ...]]:
        # Async: a waiting run holds no worker thread, so a classroom of waiting students costs nothing.
        previous = finetune.get_job(current) if current else None
        if previous is not None and previous.active:
            raise gr.Error(
                f"Your run {previous.id} is still {previous.status}: wait for it or cancel it first."
            )
        config = config_from_form(*values)
        job = await anyio.to_thread.run_sync(finetune.start, config)  # reads and tokenizes the data
        yield (*updates(job, final=False), job.plan.summary())
        seen: tuple[Any, ...] = ()
        while job.active:
            await asyncio.sleep(POLL_S)
            marker = (job.status, job.phase, job.position, job.step, len(job.eval_losses), job.logs[-1])
            if marker != seen:  # redraw only what changed: the page is shared by many waiting users
                seen = marker
                yield (*updates(job, final=False), gr.update())
        final = await anyio.to_thread.run_sync(updates, job, True)  # zips the run
        yield (*final, gr.update())

    def stop(current: str | None) -> tuple[str, str, Any]:
        job = finetune.get_job(current) if current else None
        if job is None:
            return "Nothing to cancel.", progress_html(None), gr.update()
        job.cancel()
        deadline = time.time() + 8
        while job.active and time.time() < deadline:
            time.sleep(0.1)
        snap = job.snapshot()
        return status_markdown(snap), progress_html(snap), loss_figure(snap)

    @user_errors
    def compare_runs(run_id: str | None, text: str, count: float) -> Iterator[tuple[str, str]]:
        if not run_id:
            raise gr.Error("Train a run first (or wait for yours to finish); then compare.")
        job = finetune.get_job(run_id)
        folder = job.output_dir if job is not None else finetune.run_dir(run_id)
        yield from finetune.generate_pair_stream(text, None, folder / "adapter", int(count))

    demo.load(method_line, None, method_note, api_visibility="private", **CPU_EVENT)
    demo.load(default_preset, None, preset_choice, api_visibility="private", **CPU_EVENT)
    dataset.change(
        lambda name: gr.update(visible=name == "upload"),
        dataset,
        upload,
        api_visibility="private",
        **CPU_EVENT,
    )
    preset_choice.change(apply_preset, preset_choice, preset_outputs, api_visibility="private", **CPU_EVENT)
    model.change(
        linear_layers,
        [model, targets],
        targets,
        api_visibility="private",
        concurrency_limit=2,
        concurrency_id="finetune-prepare",
    )
    check.click(
        check_run,
        form,
        [plan_box, preview_box],
        api_visibility="private",
        concurrency_limit=2,
        concurrency_id="finetune-prepare",
    )
    run_outputs = [job_state, status, progress, plot, logs, download, run_state]
    start_event = start.click(
        run, [job_state, *form], [*run_outputs, plan_box], api_visibility="private", **CPU_EVENT
    )
    cancel.click(
        stop,
        job_state,
        [status, progress, plot],
        cancels=[start_event],
        api_visibility="private",
        **CPU_EVENT,
    )
    compare.click(
        compare_runs,
        [run_state, prompt, new_tokens],
        [base_text, tuned_text],
        api_visibility="private",
        **GPU_EVENT,
    )
    _api(settings)


def _api(settings: Settings) -> None:
    """The four API names, for gradio_client users (a run is started, then polled)."""

    def finetune_start(preset: str = QUICK, changes: dict | None = None, jsonl: str = "") -> dict[str, Any]:
        """Queue a run: a preset, `changes` to its FineTuneConfig fields, `jsonl` your own chats (one a line).

        Returns the job's status (job_id, status, position, method, output_dir …); poll /finetune_status.
        """
        if preset not in finetune.PRESETS:
            raise gr.Error(f"Unknown preset {preset!r}: use one of {', '.join(finetune.PRESETS)}.")
        changes = dict(changes or {})
        dataset = changes.get("dataset")
        if dataset is not None and dataset not in finetune.DATASETS:
            raise gr.Error(
                "dataset must be 'wikipedia-instruct' or 'ultrachat'; send your own chats as `jsonl`."
            )
        for key in ("output_dir", "step_cap", "device"):
            if key in changes:
                raise gr.Error(f"{key} is set by the server, not by the API.")
        try:
            config = finetune.FineTuneConfig.from_dict({**finetune.PRESETS[preset].to_dict(), **changes})
            check_allowed(config.base_model, settings)
            if settings.classroom:
                config = config.replace(step_cap=finetune.CLASSROOM_MAX_STEPS)
            if jsonl.strip():
                upload = Path(tempfile.mkdtemp(prefix="lab-jsonl-")) / "chats.jsonl"
                upload.write_text(jsonl, encoding="utf-8")
                config = config.replace(dataset=str(upload))
            job = finetune.start(config)
        except (ValueError, TypeError, catalog.ModelUnavailable) as error:
            raise gr.Error(str(error)) from None
        return job.snapshot(log_lines=5)

    def finetune_status(job_id: str, log_lines: int = 20) -> dict[str, Any]:
        """A run's state: status, queue position, step / total, losses, eval losses, lr, ETA, log lines."""
        job = finetune.get_job(job_id)
        if job is None:
            raise gr.Error(f"No run {job_id!r} on this server.")
        return job.snapshot(log_lines=int(log_lines))

    def finetune_cancel(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running run; returns its state once it has stopped (within seconds)."""
        job = finetune.get_job(job_id)
        if job is None:
            raise gr.Error(f"No run {job_id!r} on this server.")
        job.cancel()
        deadline = time.time() + 8
        while job.active and time.time() < deadline:
            time.sleep(0.1)
        return job.snapshot(log_lines=5)

    def finetune_compare(
        prompt: str = finetune.BOOK_PROMPT, job_id: str = "", max_new_tokens: int = 64
    ) -> list[str]:
        """[base model's answer, fine-tuned answer] to the prompt, greedy, for a finished run."""
        job = finetune.get_job(job_id)
        try:
            folder = job.output_dir if job is not None else finetune.run_dir(job_id)
            return list(finetune.generate_pair(prompt, None, folder / "adapter", int(max_new_tokens)))
        except (ValueError, catalog.ModelUnavailable) as error:
            raise gr.Error(str(error)) from None

    gr.api(finetune_start, api_name="finetune_start", concurrency_limit=2, concurrency_id="finetune-prepare")
    gr.api(finetune_status, api_name="finetune_status", **CPU_EVENT)
    gr.api(finetune_cancel, api_name="finetune_cancel", **CPU_EVENT)
    gr.api(finetune_compare, api_name="finetune_compare", **GPU_EVENT)
