"""The instructor panel (``LAB_INSTRUCTORS`` only), and what every student's page hears from it.

The panel is a section built hidden and shown on page load to instructors' logins; every one of its events
checks the login again on the server (:meth:`lab.classroom.Classroom.require_instructor`), since a hidden
section's events can still be called by anyone who reads the page's config. Every page (the instructor's too)
reports which tab it shows and polls the class's version with a cheap CPU timer: when a message, a pause
or a resume is new to it, it shows the message (a toast and a banner), fills the prompt box the message
names, puts the message's image into the image boxes it names (the class's copy of the image, which every
login may read), and shows or hides each tab's pause notice. The state and rules are :mod:`lab.classroom`'s.
"""

from __future__ import annotations

import html
import time
from types import ModuleType
from typing import Any

import gradio as gr

from lab import finetune, paths, render
from lab.classroom import CLASSROOM, Message, public_name
from lab.config import Settings
from lab.errors import LabError
from lab.scheduler import SCHEDULER
from lab.sessions import owner_of
from tabs import access
from tabs.common import ImageUpload, on

TICK_S = 3.0  # how often a page asks whether the class has news (a few bytes when it has none)
# Boxes a message's prompt can fill: their label in the panel → the widget's elem_id.
PROMPT_TARGETS = {
    "Attention: text": "att-text",
    "Inside the forward pass: prompt": "fwd-prompt",
    "Fine-tune: before/after prompt": "ft-prompt",
}
# Boxes a message's image can go into: their label in the panel → the widget's elem_id.
IMAGE_TARGETS = {
    "CLIP: image query": "clip-query-image",
    "CLIP: zero-shot image": "clip-zs-image",
    "BLIP-2: chat image": "vc-image",
}
# The tab of each batched request kind (tabs.common.in_batch names them by feature, not by tab).
BATCHED_KINDS = {
    "attention": "attention",
    "next_token": "attention",
    "similarity": "attention",
    "clip_text": "clip_search",
    "caption": "vision_chat",
}
NOTICE = "⏸ **The instructor paused this tab for now.** Its models run again when they resume it."
Page = tuple[str, str, ModuleType]  # (tab title, tab id, tab module), as app.TABS lists them


def banner() -> gr.Markdown:
    """The class's latest message, at the top of every page (hidden until there is one)."""
    return gr.Markdown(visible=False, elem_id="class-message")


def pause_notice(tab_id: str) -> gr.Markdown:
    """A tab's "paused" line, shown at the top of the tab while the instructor pauses it."""
    return gr.Markdown(NOTICE, visible=False, elem_id=f"paused-{tab_id}")


def tab_name(page: Page) -> str:
    """The name model queue kinds give a tab (its module's: ``attention``, ``clip_search``)."""
    return page[2].__name__.rsplit(".", 1)[-1]


def _short_title(title: str) -> str:
    return title.split(" · ", 1)[0]


def build(
    demo: gr.Blocks,
    settings: Settings,
    tabs: gr.Tabs,
    pages: list[Page],
    notices: dict[str, gr.Markdown],
    message_box: gr.Markdown,
) -> None:
    """Start the class from ``settings``, wire every page to it, and lay out the panel (call after
    ``tabs``)."""
    CLASSROOM.configure(
        settings.instructors,
        settings.quota_gpu_seconds,
        settings.quota_finetune_steps,
        titles={tab_name(p): _short_title(p[0]) for p in pages},
        kinds=BATCHED_KINDS,
        image_folder=access.CLASS_FILES,
        max_image_bytes=settings.max_file_bytes,
    )
    SCHEDULER.admit = CLASSROOM.admit  # refuses paused tabs and spent quotas before a request waits
    finetune.RUNNER.admit = CLASSROOM.admit_finetune
    _wire_pages(demo, tabs, pages, notices, message_box)
    _panel(demo, pages)


# -- every page -------------------------------------------------------------------------------------------


def _wire_pages(
    demo: gr.Blocks,
    tabs: gr.Tabs,
    pages: list[Page],
    notices: dict[str, gr.Markdown],
    message_box: gr.Markdown,
) -> None:
    targets = [c for c in demo.blocks.values() if getattr(c, "elem_id", None) in PROMPT_TARGETS.values()]
    target_names = {elem: label for label, elem in PROMPT_TARGETS.items()}
    pictures = [c for c in demo.blocks.values() if getattr(c, "elem_id", None) in IMAGE_TARGETS.values()]
    picture_names = {elem: label for label, elem in IMAGE_TARGETS.items()}
    notice_list = [(tab_name(p), notices[p[1]]) for p in pages if p[1] in notices]
    seen = gr.State((0, 0))  # (class version, message version) this page has shown
    timer = gr.Timer(TICK_S)
    outputs = [seen, message_box, *(n for _, n in notice_list), *targets, *pictures]

    def news(shown: tuple[int, int], request: gr.Request) -> tuple[Any, ...]:
        """Inputs: what the page has shown. Outputs: the same, the banner, pause notices, prompt boxes."""
        if request is not None and request.session_hash:
            CLASSROOM.roster.seen(request.session_hash, owner_of(request))
        version, message = CLASSROOM.version, CLASSROOM.broadcast.latest()
        if version == shown[0]:
            return tuple(gr.skip() for _ in outputs)
        paused = CLASSROOM.pauses.paused()
        fresh = message.version > shown[1]
        words = html.escape(_words(message), quote=False)
        if fresh and words:
            gr.Info(words, title="From your instructor", duration=15)
        return (
            (version, message.version),
            gr.update(value=f"📣 **From your instructor:** {words}", visible=bool(words)),
            *(gr.update(visible=name in paused) for name, _ in notice_list),
            *(
                message.prompt if fresh and message.target == target_names[t.elem_id] else gr.skip()
                for t in targets
            ),
            *(
                message.image if fresh and picture_names[p.elem_id] in message.image_targets else gr.skip()
                for p in pictures
            ),
        )

    def arrived(shown: tuple[int, int], request: gr.Request) -> tuple[Any, ...]:
        """Inputs, outputs: as :func:`news`; the page counts as on its first tab."""
        if request is not None and request.session_hash:
            CLASSROOM.roster.seen(request.session_hash, owner_of(request), _short_title(pages[0][0]))
        return news(shown, request)

    def switched(event: gr.SelectData, request: gr.Request) -> None:
        """Inputs: the tab chosen. Outputs: none (the roster learns where the page is)."""
        if request is not None and request.session_hash:
            CLASSROOM.roster.seen(request.session_hash, owner_of(request), _short_title(str(event.value)))

    def left(request: gr.Request) -> None:
        if request is not None and request.session_hash:
            CLASSROOM.roster.left(request.session_hash)

    quiet = {"show_progress": "hidden"}
    on(demo.load, arrived, seen, outputs, **quiet)
    on(timer.tick, news, seen, outputs, **quiet)
    on(tabs.select, switched, None, None, **quiet)
    demo.unload(left)


def _words(message: Message) -> str:
    """What a page says of a message: its text, and where its image went."""
    where = f"An image is in: {', '.join(message.image_targets)}." if message.image else ""
    return " ".join(part for part in (message.text, where) if part)


# -- the panel --------------------------------------------------------------------------------------------


def _instructor(request: gr.Request | None) -> str:
    """The instructor's owner id; anyone else is refused (:class:`lab.classroom.NotInstructor`)."""
    owner = owner_of(request)
    CLASSROOM.require_instructor(owner)
    return owner


def class_html() -> str:
    """Who is connected, on which tab, and the model seconds each has used."""
    now = time.time()
    rows = [
        [
            public_name(p.owner),
            p.tab,
            f"{now - p.since:.0f} s",
            round(SCHEDULER.usage(p.owner), 2),
            "instructor" if CLASSROOM.is_instructor(p.owner) else "",
        ]
        for p in CLASSROOM.roster.pages()
    ]
    caption = f"{len(rows)} page(s) open" if rows else "Nobody is connected"
    return render.table(["who", "tab", "on it for", "model s used", ""], rows, caption)


def queue_html(viewer: str | None = None) -> str:
    """The model queue (what runs, who waits, in turn order) and each kind's recent service time."""
    rows = [
        [r.state, public_name(r.student, viewer), r.kind, f"{r.seconds:.1f} s", r.ahead]
        for r in SCHEDULER.snapshot()
    ]
    queue = render.table(
        ["state", "who", "what", "for", "turns ahead"],
        rows,
        "Model queue (group gpu): one model call at a time, turns round the students"
        + ("" if rows else ": empty"),
    )
    times = sorted(SCHEDULER.service_times().items())
    served = render.table(
        ["what", "recent service time"],
        [[kind, f"{seconds:.2f} s"] for kind, seconds in times],
        "Recent service time per kind" + ("" if times else ": nothing served yet"),
    )
    return queue + served


def jobs_html(viewer: str | None = None) -> str:
    """Fine-tune runs waiting or training (group finetune: one run at a time)."""
    rows = [
        [job.status, public_name(job.owner or "local", viewer), job.id, f"{job.step} / {job.total_steps}"]
        for job in finetune.RUNNER.jobs()
        if job.active
    ]
    return render.table(
        ["state", "who", "run", "steps"],
        rows,
        "Fine-tune runs (group finetune: one run trains at a time)" + ("" if rows else ": none"),
    )


def _active_jobs() -> list[tuple[str, str]]:
    return [
        (f"{job.id} · {public_name(job.owner or 'local')} · {job.status}", job.id)
        for job in finetune.RUNNER.jobs()
        if job.active
    ]


def _panel(demo: gr.Blocks, pages: list[Page]) -> None:
    with gr.Accordion("Instructor panel", open=True, visible=False, elem_id="inst-panel") as panel:
        gr.Markdown(
            "Only the logins in `LAB_INSTRUCTORS` see this panel. Instructors are never paused or limited by "
            "the quotas."
        )
        with gr.Row():
            class_box = gr.HTML(elem_id="inst-class")
            jobs_box = gr.HTML(elem_id="inst-jobs")
        queue_box = gr.HTML(elem_id="inst-queue")
        with gr.Row():
            job_choice = gr.Dropdown([], label="Run to cancel", elem_id="inst-job", scale=3)
            cancel = gr.Button("Cancel this run", variant="stop", elem_id="inst-cancel", scale=1)
        paused = gr.CheckboxGroup(
            [(_short_title(p[0]), tab_name(p)) for p in pages],
            label="Paused tabs (their model requests are refused for everyone but instructors)",
            elem_id="inst-paused",
        )
        with gr.Row():
            gpu_quota = gr.Number(
                label="Model seconds per student (0: unlimited)", minimum=0, elem_id="inst-gpu"
            )
            steps_quota = gr.Number(
                label="Fine-tune steps per student (0: unlimited)",
                minimum=0,
                precision=0,
                elem_id="inst-steps",
            )
            set_quotas = gr.Button("Set quotas", elem_id="inst-set-quotas")
        with gr.Row():
            text = gr.Textbox(label="Message to the class", elem_id="inst-text", scale=3)
            target = gr.Dropdown(
                [("(no prompt)", "")] + [(label, label) for label in PROMPT_TARGETS],
                value="",
                label="Put a prompt into",
                elem_id="inst-target",
                scale=2,
            )
        prompt = gr.Textbox(label="Prompt", elem_id="inst-prompt")
        with gr.Row():
            picture = ImageUpload(
                type="filepath",
                sources=["upload", "clipboard"],
                label="Image (optional): every student gets a copy",
                height=200,
                elem_id="inst-image",
                scale=2,
            )
            with gr.Column(scale=3):
                picture_into = gr.CheckboxGroup(
                    list(IMAGE_TARGETS), label="Put the image into", elem_id="inst-image-targets"
                )
                gr.Examples(
                    [[str(paths.BOOK_IMAGES / name)] for name in paths.BOOK_IMAGE_NAMES],
                    inputs=[picture],
                    label="The book's images (as the CLIP and BLIP-2 tabs offer them)",
                )
        send = gr.Button("Send to the class", variant="primary", elem_id="inst-send")
        timer = gr.Timer(TICK_S, active=False)

    views = [class_box, queue_box, jobs_box, job_choice]

    def refresh(current: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Inputs: the run chosen. Outputs: class, queue, runs, the runs to cancel (the choice kept)."""
        viewer = _instructor(request)
        choices = _active_jobs()
        ids = [job_id for _, job_id in choices]
        chosen = current if current in ids else (ids[0] if ids else None)
        return class_html(), queue_html(viewer), jobs_html(viewer), gr.update(choices=choices, value=chosen)

    def opened(request: gr.Request) -> tuple[Any, ...]:
        """Inputs: none. Outputs: the panel and its timer (instructors only), paused tabs, quotas, views."""
        if not CLASSROOM.is_instructor(owner_of(request)):
            return tuple(gr.skip() for _ in range(5 + len(views)))  # a student's page: nothing to show
        quotas = CLASSROOM.quotas
        return (
            gr.update(visible=True),
            gr.Timer(active=True),
            sorted(CLASSROOM.pauses.paused()),
            quotas.gpu_seconds,
            quotas.finetune_steps,
            *refresh(None, request),
        )

    def pause(tabs: list[str], request: gr.Request) -> None:
        """Inputs: the tabs to pause (all others resume). Outputs: none."""
        _instructor(request)
        CLASSROOM.set_paused(tabs or [])
        gr.Info("Paused: " + ", ".join(tabs) if tabs else "Every tab runs.")

    def quotas(seconds: float | None, steps: float | None, request: gr.Request) -> None:
        """Inputs: model seconds and fine-tune steps per student. Outputs: none."""
        _instructor(request)
        CLASSROOM.quotas.set(float(seconds or 0), int(steps or 0))
        gr.Info(f"Quotas: {seconds or 0:g} model seconds and {int(steps or 0)} fine-tune steps per student.")

    def broadcast(
        message: str, into: str, words: str, image: str | None, image_into: list[str], request: gr.Request
    ) -> tuple[Any, ...]:
        """Inputs: text, the box to fill, prompt, image, the image's boxes. Outputs: text, prompt and image,
        emptied once sent.

        The image is checked and copied for the class (:meth:`lab.classroom.Broadcast.send`); the upload
        itself is deleted, since the class's copy is what every page reads."""
        _instructor(request)
        CLASSROOM.send(message or "", words or "", into or "", image or None, image_into or [])
        if image:
            access.delete_upload(image)  # kept when the message is refused, to send again once fixed
        gr.Info("Sent to the class.")
        return "", "", None

    def cancel_run(job_id: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Inputs: a run id. Outputs: the views, once the run has stopped."""
        _instructor(request)
        job = finetune.get_job(job_id or "")
        if job is None:
            raise LabError("Choose a run to cancel (the list shows runs waiting or training).")
        job.cancel_and_wait()
        gr.Info(f"Run {job.id} of {public_name(job.owner or 'local')}: {job.status}.")
        return refresh(None, request)

    on(demo.load, opened, None, [panel, timer, paused, gpu_quota, steps_quota, *views])
    on(timer.tick, refresh, job_choice, views, show_progress="hidden")
    on(paused.input, pause, paused, None)
    on(set_quotas.click, quotas, [gpu_quota, steps_quota], None)
    on(send.click, broadcast, [text, target, prompt, picture, picture_into], [text, prompt, picture])
    on(cancel.click, cancel_run, job_choice, views)
