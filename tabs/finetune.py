"""Tab 6, chapter 12: instruction-tune a small chat model with (Q)LoRA, live, from the browser."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import gradio as gr

from lab import device, export, finetune, snippets, validate
from lab.config import Settings
from lab.errors import LabError
from lab.finetune import share, view
from lab.sessions import owner_of
from tabs import links as page_links
from tabs.common import api, check_allowed, model_choices, on, slider, warn
from tabs.export import code_panel

INTRO = """
## Chapter 12 · Fine-tuning a chat model with QLoRA
The book instruction-tunes **TinyLlama** on 3,000 **UltraChat** conversations: the base model is loaded in
**4-bit NF4** (the *Q*), frozen, and only a small **LoRA** adapter (r=64 on seven projection layers) learns;
375 steps took 12:45 on a free T4 and the loss fell from 1.67 to about 1.4. Here you run the same recipe:
pick a preset, look at the data as the model reads it, check what it will cost, then watch the loss fall
and compare the answers before and after. Runs train in their own process, one at a time (others wait in
a queue and see their place), and each keeps its own folder with the adapter, its settings and metrics.
"""

DATASET_CHOICES = [
    ("Wikipedia instructions (offline, CC BY-SA)", "wikipedia-instruct"),
    ("UltraChat 200k, the book's (Hub)", "ultrachat"),
    ("My JSONL file (upload)", "upload"),
]
POLL_S = 1.0
PREPARE: dict[str, Any] = {"concurrency_limit": 2, "concurrency_id": "finetune-prepare"}

Form = dict[str, gr.components.Component]  # config field name → its widget: the form's one table


def form_widgets(preset: str, settings: Settings) -> tuple[gr.Radio, Form]:
    """Lay out the preset choice and the form. Each widget is entered once, under the config field it
    edits, and starts at the preset's value; ``upload`` is the file used when the data set is "upload"."""
    form: Form = {}
    start = finetune.PRESETS[preset].to_dict()

    def field(name: str, widget: Any, **options: Any) -> None:
        form[name] = widget(value=start.get(name), **options)

    with gr.Row():
        choice = gr.Radio(list(finetune.PRESETS), value=preset, label="Preset", elem_id="ft-preset", scale=2)
        field(
            "base_model",
            gr.Dropdown,
            choices=model_choices(finetune.model_ids()),
            label="Base model",
            allow_custom_value=not settings.classroom,
            elem_id="ft-model",
            scale=3,
        )
    with gr.Row():
        field("dataset", gr.Radio, choices=DATASET_CHOICES, label="Data set", elem_id="ft-dataset", scale=3)
        field(
            "upload",
            gr.File,
            label="JSONL of chats ({'messages': [{'role', 'content'}, …]} per line)",
            file_types=[".jsonl", ".json", ".gz"],
            elem_id="ft-file",
            visible=False,
            height=120,
            scale=2,
        )
    with gr.Accordion("LoRA adapter", open=True):
        with gr.Row():
            field("r", gr.Number, label="r (rank)", precision=0, minimum=1, elem_id="ft-r")
            field("lora_alpha", gr.Number, label="alpha", minimum=0, elem_id="ft-alpha")
            field("lora_dropout", gr.Number, label="dropout", minimum=0, maximum=0.99)
        field(
            "target_modules",
            gr.CheckboxGroup,
            choices=list(finetune.BOOK_TARGET_MODULES),
            label="Target modules: the model's linear layers (the book's seven preselected)",
            elem_id="ft-targets",
        )
    with gr.Accordion("Training", open=False):
        with gr.Row():
            field("learning_rate", gr.Number, label="learning rate", elem_id="ft-lr")
            field("lr_scheduler", gr.Dropdown, choices=list(finetune.SCHEDULERS), label="schedule")
            field("batch_size", gr.Number, label="batch size", precision=0, minimum=1)
            field("grad_accum", gr.Number, label="gradient accumulation", precision=0, minimum=1)
        with gr.Row():
            field("max_examples", gr.Number, label="training examples", precision=0, minimum=1)
            field("eval_examples", gr.Number, label="held-out examples", precision=0, minimum=0)
            field("epochs", gr.Number, label="epochs", minimum=0.01)
            field("max_steps", gr.Number, label="max steps (0: the epochs decide)", precision=0, minimum=0)
            field("max_seq_length", gr.Number, label="max sequence length", precision=0, minimum=16)
        with gr.Row():
            field("answers_only", gr.Checkbox, label="loss on answers only (mask the prompt)")
        with gr.Row():
            field("gradient_checkpointing", gr.Checkbox, label="gradient checkpointing")
            field("quantize_4bit", gr.Checkbox, label="4-bit NF4 base model (QLoRA)")
            field("merge", gr.Checkbox, label="merge into a 16-bit model after training")
            field("seed", gr.Number, label="seed", precision=0)
    return choice, form


def to_form(form: Form, config: finetune.FineTuneConfig) -> dict[Any, Any]:
    """Config → form: each widget's value from its field (the upload is no config field and stays)."""
    values = config.to_dict()
    return {widget: values[name] for name, widget in form.items() if name in values}


def to_config(form: Form, values: dict[Any, Any], settings: Settings) -> finetune.FineTuneConfig:
    """Form → config: the widgets' values by field name, checked and converted by the library."""
    fields = {name: values[widget] for name, widget in form.items()}
    check_allowed(fields["base_model"], settings)
    return finetune.from_form(fields, step_cap=finetune.CLASSROOM_MAX_STEPS if settings.classroom else 0)


def method_line() -> str:
    """What this server can run, said before anyone starts (asked on page load: importing the app must
    not import torch)."""
    return view.method_markdown(device.select(), finetune.bitsandbytes_4bit())


def _download(output_dir: str) -> str:
    """A zip of the run in a temporary folder (Gradio serves files from there, not from the lab's cache)."""
    archive = finetune.zip_run(output_dir)
    target = Path(tempfile.mkdtemp(prefix="lab-run-")) / archive.name
    shutil.copyfile(archive, target)
    return str(target)


def _shown(job: finetune.Job, final: bool) -> tuple[Any, ...]:
    """A job as the page shows it: id, status, progress, loss curve, log, the zip, the run to compare."""
    snap = job.snapshot(log_lines=200)
    done = final and snap["status"] == "done"
    return (
        job.id,
        view.status_markdown(snap),
        view.progress_html(snap),
        view.loss_figure(snap),
        "\n".join(snap["logs"]),
        gr.update(value=_download(snap["output_dir"]), visible=True) if done else gr.update(),
        job.id if done else gr.update(),
    )


def _with_reason(answer: str) -> Any:
    """An answer for its box: while it grows, the text; once finished, also why it stopped (the box's
    info line: its end-of-text token, or the token limit)."""
    reason = view.stopped_words(answer)
    return gr.update(value=str(answer), info=reason) if reason else answer


def build(demo: gr.Blocks, settings: Settings) -> None:
    """Lay out the fine-tune tab inside ``demo``: form, preview and plan, live run, before/after."""
    gr.Markdown(INTRO)
    method_note = gr.Markdown(elem_id="ft-method")
    # The quick preset, switched to the book's on page load when a GPU is there.
    preset_choice, form = form_widgets(finetune.QUICK_PRESET, settings)
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
    progress = gr.HTML(view.progress_html(None), elem_id="ft-progress")
    with gr.Row():
        plot = gr.Plot(elem_id="ft-loss", scale=3)  # drawn by the first status update (plotly loads then)
        logs = gr.Textbox(label="Log", lines=14, max_lines=14, autoscroll=True, elem_id="ft-logs", scale=2)
    download = gr.File(
        label="This run: adapter, settings and metrics (zip)", elem_id="ft-download", visible=False, height=80
    )
    panel = code_panel("ft")
    with gr.Accordion("The data as the model reads it", open=False):
        preview_box = gr.HTML(elem_id="ft-preview")
        preview_panel = code_panel("ft-preview")
    gr.Markdown(
        "### Before and after\nThe same prompt through the base model and through base + adapter (merged, "
        "as the book does), greedy decoding. The book's prompt is preset."
    )
    with gr.Row():
        prompt = gr.Textbox(finetune.BOOK_PROMPT, label="Prompt", elem_id="ft-prompt", scale=4)
        new_tokens = slider("ft_new_tokens", "New tokens", scale=1)
        compare = gr.Button("Compare", elem_id="ft-compare", scale=1)
    with gr.Row():
        base_text = gr.Textbox(label="Base model", lines=6, elem_id="ft-base")
        tuned_text = gr.Textbox(label="Fine-tuned", lines=6, elem_id="ft-tuned")
    compare_panel = code_panel("ft-compare")
    with gr.Row():
        share_button = gr.Button(
            "Share the results (curves and these answers, read-only)", elem_id="ft-share"
        )
        share_code = gr.Textbox(visible="hidden", elem_id="ft-share-code")
    job_state = gr.State(None)
    run_state = gr.State(None)
    presettable = [widget for name, widget in form.items() if name != "upload"]

    def apply_preset(name: str) -> dict[Any, Any]:
        """Inputs: the preset's name. Outputs: every form field but the upload."""
        return to_form(form, finetune.PRESETS[name])

    def linear_layers(model_id: str, chosen: list[str]) -> Any:
        """Inputs: base model, target modules. Outputs: the model's linear layers as the target choices
        (keeping what still exists, else the book's seven)."""
        try:
            check_allowed(model_id, settings)
            names = finetune.model_facts(model_id).target_choices
        except (LabError, gr.Error) as error:
            warn(str(error)[:400])
            return gr.update()
        kept = [n for n in (chosen or []) if n in names]
        default = [n for n in finetune.BOOK_TARGET_MODULES if n in names] or names[:2]
        return gr.update(choices=names, value=kept or default)

    def check_run(values: dict[Any, Any]) -> tuple[str, str, str, list[str]]:
        """Inputs: the form. Outputs: the plan (Markdown), the data preview (HTML), code, downloads."""
        config = to_config(form, values, settings)
        chats = finetune.load_conversations(
            config.dataset, config.max_examples, config.eval_examples, config.seed
        )
        plan, preview = finetune.plan(config, chats), finetune.preview(config, 3, chats)
        return (
            plan.summary(),
            view.preview_html(preview),
            snippets.finetune_preview(config.to_dict()),
            export.finetune_preview_files(plan, preview),
        )

    async def run(values: dict[Any, Any], request: gr.Request) -> AsyncIterator[tuple[Any, ...]]:
        """Inputs: the form and the page's job. Outputs: job, status, progress, loss curve, log, zip, the run
        to compare, plan; redrawn while the run trains."""
        # Async: a waiting run holds no worker thread, so a classroom of waiting students costs nothing.
        current = values[job_state]
        previous = finetune.get_job(current) if current else None
        if previous is not None and previous.active:
            raise gr.Error(
                f"Your run {previous.id} is still {previous.status}: wait for it or cancel it first."
            )
        config = to_config(form, values, settings)
        owner = owner_of(request)
        job = await anyio.to_thread.run_sync(finetune.start, config, None, owner)  # reads the data
        yield (*_shown(job, final=False), job.plan.summary())
        seen: tuple[Any, ...] = ()
        while job.active:
            await asyncio.sleep(POLL_S)
            marker = (job.status, job.phase, job.position, job.step, len(job.eval_losses), job.logs[-1])
            if marker != seen:  # redraw only what changed: the page is shared by many waiting users
                seen = marker
                yield (*_shown(job, final=False), gr.update())
        final = await anyio.to_thread.run_sync(_shown, job, True)  # zips the run
        yield (*final, gr.update())

    def stop(current: str | None, request: gr.Request) -> tuple[str, str, Any]:
        """Inputs: the page's job. Outputs: status, progress, loss curve, once the run has stopped."""
        if not current or finetune.get_job(current) is None:
            return "Nothing to cancel.", view.progress_html(None), gr.update()
        job = finetune.owned_job(current, owner_of(request))
        job.cancel_and_wait()
        snap = job.snapshot()
        return view.status_markdown(snap), view.progress_html(snap), view.loss_figure(snap)

    def compare_runs(
        run_id: str | None, text: str, count: float, request: gr.Request
    ) -> Iterator[tuple[str, str]]:
        """Inputs: the finished run, prompt, new tokens. Outputs: base and fine-tuned answers, streamed."""
        count = validate.bound("ft_new_tokens", count)
        adapter = finetune.run_folder(run_id or "", owner_of(request)) / "adapter"
        base = tuned = ""
        for base, tuned in finetune.generate_pair_stream(text, None, adapter, count):
            yield _with_reason(base), _with_reason(tuned)
        share.record_comparison(adapter.parent, text, base, tuned)  # what "Share the results" may show

    def publish(run_id: str | None, request: gr.Request) -> tuple[str, str]:
        """Inputs: the finished run. Outputs: its share code (the page address takes it), a status line."""
        if not run_id:
            raise gr.Error("Train a run to the end first: only a finished run can be shared.")
        job = finetune.owned_job(run_id, owner_of(request))
        code = share.publish(job.snapshot(), job.output_dir)
        return code, share.describe(share.load(code)) + " **The page address now links here: copy it.**"

    def open_shared(link: dict[str, Any]) -> tuple[Any, ...]:
        """Inputs: the link. Outputs: status, loss curve, prompt and answers of the shared run."""
        public = share.load(link["ft.share"])
        comparison = public.get("comparison") or {}
        return (
            share.describe(public),
            view.loss_figure(public),
            comparison.get("prompt", gr.skip()),
            comparison.get("base", ""),
            comparison.get("tuned", ""),
        )

    def run_code(current: str | None) -> tuple[Any, Any]:
        """Inputs: the page's job. Outputs: the run's code and downloads (loss curve, losses, state)."""
        job = finetune.get_job(current) if current else None
        if job is None:
            return panel.unchanged()
        snap = job.snapshot()
        return snippets.finetune_run(job.config.to_dict(), snap["method"]), export.finetune_files(
            snap, view.loss_figure(snap)
        )

    def compare_code(
        run_id: str | None, text: str, count: float, base: str, tuned: str, request: gr.Request
    ) -> tuple[Any, Any]:
        """Inputs: the finished run, prompt, new tokens, both answers. Outputs: their code and downloads."""
        if not run_id or not (base or tuned):
            return compare_panel.unchanged()
        adapter = finetune.run_folder(run_id, owner_of(request)) / "adapter"
        count = validate.bound("ft_new_tokens", count)
        record = {"run": run_id, "prompt": text, "max_new_tokens": count, "base": base, "fine_tuned": tuned}
        return snippets.finetune_compare(text, None, str(adapter), count), export.write(
            "finetune-compare", data=record
        )

    on(demo.load, method_line, None, method_note)
    on(demo.load, finetune.default_preset, None, preset_choice)
    on(
        form["dataset"].change,
        lambda name: gr.update(visible=name == "upload"),
        form["dataset"],
        form["upload"],
    )
    on(preset_choice.change, apply_preset, preset_choice, presettable)
    on(
        form["base_model"].change,
        linear_layers,
        [form["base_model"], form["target_modules"]],
        form["target_modules"],
        **PREPARE,
    )
    on(check.click, check_run, set(form.values()), [plan_box, preview_box, *preview_panel.outputs], **PREPARE)
    run_outputs = [job_state, status, progress, plot, logs, download, run_state, plan_box]
    started = on(start.click, run, {job_state, *form.values()}, run_outputs)
    on(cancel.click, stop, job_state, [status, progress, plot], cancels=[started])
    on(started.then, run_code, job_state, panel.outputs)
    compared = on(
        compare.click, compare_runs, [run_state, prompt, new_tokens], [base_text, tuned_text], generates=True
    )
    answers = [run_state, prompt, new_tokens, base_text, tuned_text]
    on(compared.then, compare_code, answers, compare_panel.outputs)
    on(share_button.click, publish, run_state, [share_code, status])
    on(share_code.change, None, share_code, js=page_links.sync_js("finetune", ["ft.share"]))
    shared = page_links.share(demo, "finetune", {}, extra=("ft.share",))
    on(shared.ready, open_shared, shared.state, [status, plot, prompt, base_text, tuned_text])
    _api(settings)


def _public(job: finetune.Job, log_lines: int) -> dict[str, Any]:
    """A job's state as a client sees it: everything but the folder it has on the server."""
    snap = job.snapshot(log_lines=log_lines)
    del snap["output_dir"]
    return snap


def _api(settings: Settings) -> None:
    """The four API names, for gradio_client users (a run is started, then polled)."""

    # Each call's gr.Request (Gradio fills it in; clients do not send it) says whose run it is: a run is
    # seen, cancelled and compared by the student who started it only.
    def finetune_start(
        preset: str = finetune.QUICK_PRESET,
        changes: dict | None = None,
        jsonl: str = "",
        request: gr.Request = None,
    ) -> dict[str, Any]:
        """Queue a run: a preset, `changes` to its FineTuneConfig fields, `jsonl` your own chats (one a line).

        Returns the job's status (job_id, status, position, method …); poll /finetune_status.
        """
        preset, jsonl = validate.text(preset, "preset"), validate.text(jsonl, "jsonl", required=False)
        if changes is not None and not isinstance(changes, dict):
            raise gr.Error('changes must be an object of FineTuneConfig fields, e.g. {"seed": 1}.')
        cap = finetune.CLASSROOM_MAX_STEPS if settings.classroom else 0
        config = finetune.from_request(preset, changes, jsonl, step_cap=cap)
        check_allowed(config.base_model, settings)
        return _public(finetune.start(config, owner=owner_of(request)), 5)

    def finetune_status(job_id: str, log_lines: int = 20, request: gr.Request = None) -> dict[str, Any]:
        """A run's state: status, queue position, step / total, losses, eval losses, lr, ETA, log lines."""
        log_lines = validate.bound("log_lines", log_lines)
        job = finetune.owned_job(validate.text(job_id, "job_id", max_chars=64), owner_of(request))
        return _public(job, log_lines)

    def finetune_cancel(job_id: str, request: gr.Request = None) -> dict[str, Any]:
        """Cancel a queued or running run; returns its state once it has stopped (within seconds)."""
        job = finetune.owned_job(validate.text(job_id, "job_id", max_chars=64), owner_of(request))
        job.cancel_and_wait()
        return _public(job, 5)

    def finetune_compare(
        prompt: str = finetune.BOOK_PROMPT,
        job_id: str = "",
        max_new_tokens: int = 64,
        request: gr.Request = None,
    ) -> list[str]:
        """[base model's answer, fine-tuned answer] to the prompt, greedy, for a finished run."""
        max_new_tokens = validate.bound("ft_new_tokens", max_new_tokens)
        prompt = validate.text(prompt, "prompt", required=False)
        job_id = validate.text(job_id, "job_id", max_chars=64, required=False)
        adapter = finetune.run_folder(job_id, owner_of(request)) / "adapter"
        return list(finetune.generate_pair(prompt, None, adapter, max_new_tokens))

    api(finetune_start, gpu=False, **PREPARE)
    api(finetune_status, gpu=False)
    api(finetune_cancel, gpu=False)
    api(finetune_compare, generates=True)
