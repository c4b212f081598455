"""Pictures of a fine-tune for people: the data preview, the plan, the progress bar, the loss curve.

Pure functions of the library's results (:class:`~lab.finetune.data.DatasetPreview`,
:class:`~lab.finetune.estimate.Plan`) and of a job's snapshot (the dict :meth:`Job.snapshot` returns, also
what ``/finetune_status`` sends): they return HTML, Markdown or a plotly figure and touch no model and no UI.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.device import Placement
    from lab.finetune.data import DatasetPreview, PreviewExample
    from lab.finetune.estimate import Plan

Snapshot = dict[str, Any]


def gb(nbytes: float) -> str:
    """Bytes as people read them: ``1.23 GB`` or ``45 MB``."""
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.0f} MB"


def duration(seconds: float | None) -> str:
    """Seconds as ``12 s``, ``3 min 04 s`` or ``1 h 02 min``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# -- before a run: the plan and the data ------------------------------------------------------------


def _text(value: Any) -> str:
    """A model id, file name or line of a user's data, made inert for Markdown (markup shows as written)."""
    return html.escape(str(value), quote=False)


def plan_summary(plan: Plan) -> str:
    """A plan as a Markdown paragraph: method, trainable share, data, steps, memory and time."""
    f = plan.facts
    lines = [
        f"**{plan.method_title}** on `{plan.device}` · {_text(f.model_id)} "
        f"({f.parameters / 1e6:,.1f} M parameters)",
        f"- trainable: **{plan.trainable:,}** parameters, {plan.trainable_percent:.2f} % of "
        f"{f.parameters + plan.trainable:,} "
        f"(r={plan.config.r} on {_text(', '.join(plan.config.target_modules))})",
        f"- data: {plan.train_examples:,} training and {plan.eval_examples:,} held-out conversations "
        f"({_text(plan.source)}); {plan.train_tokens:,} training tokens; {plan.truncated:,} longer than "
        f"{plan.config.max_seq_length} tokens were truncated",
        f"- {plan.total_steps:,} optimizer steps of {plan.config.batch_size} × {plan.config.grad_accum} "
        f"conversations (≈{plan.tokens_per_step:,.0f} tokens per step)",
        f"- estimated memory **{gb(plan.memory_bytes)}** ("
        + ", ".join(f"{k} {gb(v)}" for k, v in plan.memory_parts.items())
        + f"); estimated time **{duration(plan.seconds)}** (rough; the progress bar's ETA follows "
        "the real pace)",
    ]
    if plan.problems:
        lines.append(f"- skipped {len(plan.problems):,} line(s): " + _text("; ".join(plan.problems[:3])))
    lines += [f"- {_text(note)}" for note in plan.notes]
    return "\n".join(lines)


PREVIEW_STYLE = """
<style>
.lab-ft{font-family:ui-sans-serif,system-ui,sans-serif;color:#1f2328;font-size:13px}
.lab-ft .chat{border:1px solid #d0d7de;border-radius:8px;padding:8px;margin:6px 0;background:#fff}
.lab-ft pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font-size:12px;line-height:1.5}
.lab-ft .special{background:#ffebe9;outline:1px solid #cf222e;border-radius:3px;color:#a40e26;font-weight:600}
.lab-ft .meta{color:#57606a;font-size:12px}
.lab-ft .cut{color:#9a6700;font-weight:600}
.lab-ft .problems{color:#a40e26;font-size:12px}
.lab-ft .loss{border-bottom:2px solid #1a7f37}
.lab-ft .masked{color:#6e7781}
.lab-ft .gone{color:#6e7781;text-decoration:line-through}
.lab-ft .ends{margin:4px 0}
.lab-ft .warn{color:#a40e26;font-weight:600}
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
    head += _loss_and_end(result)
    chats = []
    for index, example in enumerate(result.examples, start=1):
        cut = " · <span class='cut'>truncated</span>" if example.truncated else ""
        chats.append(
            f"<div class='chat'><div class='meta'>example {index} · {example.tokens:,} tokens{cut}</div>"
            f"<pre>{_pieces(example, result.special_tokens)}</pre></div>"
        )
    return f"{PREVIEW_STYLE}<div class='lab-ft'>{head}{''.join(chats)}</div>"


PIECE_CLASSES = {"loss": "loss", "masked": "masked", "cut": "gone"}


def _pieces(example: PreviewExample, specials: list[str]) -> str:
    """An example's tokens, underlined where they count for the loss, grey where masked or cut."""
    if not example.pieces:
        return _highlight(example.text, specials)
    return "".join(
        f"<span class='{PIECE_CLASSES[kind]}'>{_highlight(text, specials)}</span>"
        for text, kind in example.pieces
    )


def _loss_and_end(result: DatasetPreview) -> str:
    """Which tokens the loss counts, and how an answer ends (with the "never stops" warning)."""
    if result.answers_only:
        loss = (
            "<b>Loss on answers only</b>: <span class='loss'>underlined</span> tokens (the assistant's "
            "turns and their end marker) count; <span class='masked'>grey</span> ones are read, not learnt."
        )
    else:
        loss = (
            "<b>Loss on every token</b>, prompt included (<span class='loss'>underlined</span>), as the "
            "book's SFTTrainer does on rendered text; tick “loss on answers only” to mask the prompt."
        )
    lines = [
        f"<div class='ends'>{loss} <span class='gone'>Struck-through</span> tokens are past the "
        "max sequence length and never seen.</div>"
    ]
    end = result.turn_end
    if end is not None:
        marker = html.escape(repr(end.marker))
        if end.stops:
            lines.append(
                f"<div class='ends'>Each answer ends with {marker}, which holds the end-of-text token "
                f"{html.escape(repr(end.stop_token))}: the tuned model learns to stop there.</div>"
            )
        else:
            lines.append(f"<div class='ends warn'>⚠ {html.escape(end.warning or '')}</div>")
    return "".join(lines)


def method_markdown(placement: Placement, four_bit: tuple[bool, str]) -> str:
    """What a server can run, said before anyone starts: QLoRA 4-bit or plain LoRA, and where.

    Args:
        placement: the lab's device (:func:`lab.device.select`).
        four_bit: :func:`lab.finetune.bitsandbytes_4bit`'s ``(available, why)``.
    """
    ok, why = four_bit
    if placement.kind == "cuda":
        four = "QLoRA 4-bit NF4 (bitsandbytes)" if ok else f"no 4-bit: {why}"
        return f"This server trains on **{placement.device}**: {four}, or LoRA in 16-bit."
    four = "4-bit NF4 is possible here too (bitsandbytes CPU kernels, slower)" if ok else f"no 4-bit: {why}"
    return (
        f"This server trains on the **CPU**: **LoRA fp32** is what the quick preset runs; {four}. "
        "The book's preset wants a CUDA GPU."
    )


# -- during and after a run: pure functions of a job's snapshot --------------------------------------


# The loss figure's traces: the snapshot's series, its name, on the learning-rate axis or not, its style.
# The first trace is the training loss (the browser test counts its points).
LOSS_TRACES: tuple[tuple[str, str, bool, dict[str, Any]], ...] = (
    (
        "losses",
        "training loss",
        False,
        {"mode": "lines+markers", "line": {"color": "#0969da"}, "marker": {"size": 5}},
    ),
    (
        "eval_losses",
        "held-out loss",
        False,
        {
            "mode": "lines+markers",
            "line": {"color": "#cf222e", "dash": "dot"},
            "marker": {"size": 8, "symbol": "diamond"},
        },
    ),
    ("learning_rates", "learning rate", True, {"mode": "lines", "line": {"color": "#8c959f", "width": 1}}),
)


def loss_figure(snapshot: Snapshot | None) -> Any:
    """Training loss per step (line and points), held-out loss, and the learning rate on a second axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    snap = snapshot or {}
    total = snap.get("total_steps") or 1
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for key, name, on_rate_axis, style in LOSS_TRACES:
        points = snap.get(key) or []
        trace = go.Scatter(x=[s for s, _ in points], y=[v for _, v in points], name=name, **style)
        figure.add_trace(trace, secondary_y=on_rate_axis)
    title = f"Loss · step {snap.get('step', 0)} / {total}" if snapshot else "Loss (starts when a run starts)"
    figure.update_layout(
        title=title,
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2},
        xaxis={"title": "optimizer step", "range": [0, max(total, 1) + 0.5]},
    )
    figure.update_yaxes(title_text="cross-entropy loss", secondary_y=False)
    figure.update_yaxes(title_text="learning rate", secondary_y=True, showgrid=False, tickformat=".2e")
    return figure


def progress_html(snapshot: Snapshot | None) -> str:
    """A progress bar: step / total, percent, elapsed, ETA, phase and what runs."""
    if not snapshot:
        return "<div id='ft-bar' data-step='0' data-status='idle'></div>"
    step, total = snapshot["step"], max(1, snapshot["total_steps"])
    percent = 100 * step / total
    status = snapshot["status"]
    colour = {"failed": "#cf222e", "cancelled": "#9a6700", "done": "#1a7f37"}.get(status, "#0969da")
    queued_here = status == "queued" and snapshot["position"]  # a cluster's queue (Ray) has no position
    where = f"position {snapshot['position']} in the queue" if queued_here else snapshot["phase"]
    return (
        f"<div id='ft-bar' data-step='{step}' data-total='{total}' data-status='{status}' "
        "style='font-family:ui-sans-serif,system-ui,sans-serif;font-size:13px'>"
        f"<div style='display:flex;justify-content:space-between'><b>{html.escape(status)}</b>"
        f"<span>step {step} / {total} · {percent:.0f} % · elapsed {duration(snapshot['elapsed_s'])} · "
        f"ETA {duration(snapshot['eta_s'])}</span></div>"
        "<div style='background:#eaeef2;border-radius:6px;height:12px;margin:4px 0'>"
        f"<div style='width:{percent:.1f}%;background:{colour};height:12px;border-radius:6px'></div></div>"
        f"<div style='color:#57606a'>{html.escape(where)} · {html.escape(snapshot['method_title'])}"
        + (f" · lr {snapshot['lr']:.2e}" if snapshot.get("lr") else "")
        + "</div></div>"
    )


def status_markdown(snapshot: Snapshot | None) -> str:
    """One line on where a run stands: queued (and where), running, done (loss first → last), failed."""
    if not snapshot:
        return ""
    status, run = snapshot["status"], f"`{snapshot['job_id']}`"
    if status == "queued" and not snapshot["position"]:  # queued on a Ray cluster, not on this server
        return f"⏳ **Queued** {run}: {snapshot['phase']}."
    if status == "queued":
        ahead = snapshot["position"]
        return (
            f"⏳ **Queued: position {ahead}.** One run trains at a time on this server; "
            f"{ahead} run(s) start before yours. Run {run}."
        )
    if status == "running":
        return f"🏃 **Running** {run} ({snapshot['method_title']}): {snapshot['phase']}."
    if status == "done":
        losses = snapshot["losses"]
        first, last = (losses[0][1], losses[-1][1]) if losses else (float("nan"), float("nan"))
        return (
            f"✅ **Done** {run}: {snapshot['step']} steps in {duration(snapshot['elapsed_s'])}, "
            f"loss {first:.3f} → {last:.3f} ({snapshot['method_title']}). "
            "Download the run below, and compare the answers."
        )
    if status == "cancelled":
        return f"⏹ **Cancelled** {run} at step {snapshot['step']}; its memory is freed."
    return f"❌ **Failed** {run}: {snapshot['error']}"


def stopped_words(answer: str) -> str | None:
    """Why a finished answer ended, for the line under its box (None while it grows)."""
    stopped, tokens = getattr(answer, "stopped", None), getattr(answer, "tokens", 0)
    if stopped == "end":
        return f"Stopped by itself after {tokens} tokens: it wrote its end-of-text token."
    if stopped == "limit":
        return (
            f"Cut at the {tokens}-token limit, still talking: it did not write its end-of-text token "
            "(a model that never learnt where answers end keeps going)."
        )
    return None
