"""The ``classroom`` load test: simulated students on one launched lab, as a classroom uses it.

``make loadtest N=60 MINUTES=10`` (``python -m bench classroom --students 60 --minutes 10``) launches the
real app (``python app.py``, offline, on a free port of 127.0.0.1) and drives it with `locust
<https://locust.io>`_, used as a library: each simulated student is a locust ``User`` calling the lab's web
API (Gradio's ``/gradio_api/call/<name>``, the requests ``gradio_client`` makes) and reading for 1–3 s after
each answer. The mix (:data:`~bench.classroom.students.MIX`) is mostly tokenizing the book's sample text with
four tokenizers, then next token (SmolLM2), attention and sentence similarity (MiniLM), topic search on the
Wikipedia corpus after one shared fit, CLIP search and BLIP-2 captions on tiny random models (written into
``LAB_MODEL_DIR`` under the book's ids), and one fine-tune run per class (a tiny random Llama).

Before the students arrive the server is warmed up as an instructor would before class: the one topic fit,
then every endpoint once to load its model and 3 times more, the median being its service time *alone*.
The server's memory (psutil RSS of the app and of its fine-tune worker) is sampled every
:data:`MEMORY_INTERVAL_S` s.
Several class sizes (``--students 10 30 60``) run one after the other on the same warm server.

Reported per endpoint: calls, errors, p50 / p95 / max seconds; memory at start, warm, with the class there and
after it left; as a
Markdown table, a JSON file and a PNG (latency per endpoint, memory over time) per class size, under
``test-artifacts/loadtest/`` (``--out`` elsewhere). The section's rows carry the classroom targets:

- every call answered without an error;
- cheap events (tokenizing, the fine-tune status) p95 < 2 s;
- a model event's p95 within its *fair-share bound*
  (:func:`~bench.classroom.measures.fair_share_bound`): its time alone plus one turn of every other
  student's share of the model queue, ``alone + (students − 1) × model share of the mix × mean model time
  alone``, what a fair queue holding one job per student gives;
- memory flat after warm-up: once the students have closed their tabs (each simulated student holds its
  session's heartbeat stream open, as a browser tab does, and closes it when it leaves; the server frees
  a closed session after ``LAB_CLOSED_GRACE_S``, 5 s here), less than 100 MB above the warm level. Also
  reported: the memory with the whole class there, and its trend over the class's second half (when every
  student has arrived and visited every tab, what still rises grows with time, not with the class).

A class works for ``minutes``, then on (at most :data:`COVERAGE_GRACE_S` more) until every endpoint has been
called, so that a short run reports on all of them. Times are measured, never asserted: they depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.classroom.figures import (
    MEMORY_GROWTH_TARGET_MB,
    endpoint_table,
    megabytes,
    p95_target,
    seconds,
    summary_table,
    write_outputs,
)
from bench.classroom.measures import FINETUNE_RUN, Recorder, fair_share_bound, summarize
from bench.classroom.server import (
    finish_finetune,
    launched_app,
    let_go,
    settle,
    warm_up,
    write_tiny_models,
)
from bench.classroom.students import MIX, Plan, user_classes
from bench.report import Row, Section

__all__ = ["MIX", "OUT", "TITLE", "fair_share_bound", "run", "run_classes", "section"]

TITLE = "Classroom load"
OUT = ROOT / "test-artifacts" / "loadtest"
MEMORY_INTERVAL_S = 2.0
COVERAGE_GRACE_S = 120.0
SAMPLE_TEXT = ROOT / "assets" / "book" / "tokenizer_sample.txt"
IMAGE = ROOT / "assets" / "book" / "images" / "car.png"


def run_classes(sizes: list[int], minutes: float, out: Path = OUT) -> list[dict[str, Any]]:
    """Launch the app, warm it up, then send each class of ``sizes`` students for ``minutes`` in turn.

    Returns each class's measures (:func:`~bench.classroom.measures.summarize`, plus its files).
    """
    # Importing locust patches the process for gevent: do it before requests and ssl are loaded.
    import gevent
    from locust.env import Environment

    out.mkdir(parents=True, exist_ok=True)
    current = {"recorder": Recorder()}  # the memory sampler writes into the running class's recorder
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lab-loadtest-") as scratch:
        tiny_llama = write_tiny_models(Path(scratch))
        with launched_app(Path(scratch), out / "classroom-server.log") as (url, server):
            sampler = gevent.spawn(_sample_memory, current, server.pid)
            try:
                warm: dict[str, Any] | None = None
                for students in sizes:
                    recorder = current["recorder"] if warm is None else Recorder()
                    current["recorder"] = recorder
                    recorder.sample_memory(server.pid)
                    recorder.mark("start")
                    plan = Plan(
                        url, SAMPLE_TEXT.read_text(encoding="utf-8"), IMAGE, str(tiny_llama), recorder
                    )
                    if warm is None:
                        warm = warm_up(plan)
                        this_warm = warm
                    else:  # the class before this one left the server warm
                        this_warm = {"alone_s": warm["alone_s"]}
                    recorder.sample_memory(server.pid)
                    recorder.mark("warm")

                    env = Environment(user_classes=user_classes(), host=url)
                    env.lab_plan = plan  # what every student reads in on_start
                    env.events.request.add_listener(recorder.on_request)
                    runner = env.create_local_runner()
                    recorder.mark("load_start")
                    runner.start(students, spawn_rate=max(1.0, students / 10))  # the class arrives over ~10 s
                    _work(runner, recorder, minutes * 60)
                    recorder.mark("load_end")
                    settle(plan)
                    finish_finetune(plan)
                    recorder.sample_memory(server.pid)
                    recorder.mark("end")
                    let_go(plan)
                    recorder.sample_memory(server.pid)

                    details = summarize(recorder, students, minutes, this_warm)
                    details["files"] = write_outputs(
                        details, out, f"classroom-{students}-students-{minutes:g}min"
                    )
                    print(endpoint_table(details) + "\n", file=sys.stderr, flush=True)
                    runs.append(details)
            finally:
                sampler.kill()
    if len(runs) > 1:
        (out / "classroom-summary.md").write_text(summary_table(runs) + "\n", encoding="utf-8")
    return runs


def _sample_memory(current: dict[str, Recorder], pid: int) -> None:
    import gevent

    while True:
        current["recorder"].sample_memory(pid)
        gevent.sleep(MEMORY_INTERVAL_S)


def _work(runner: Any, recorder: Recorder, duration_s: float) -> None:
    """Let the students work for ``duration_s``, then on until every endpoint was called (at most
    :data:`COVERAGE_GRACE_S` more); then send them home."""
    import gevent

    begun = time.perf_counter()
    gevent.sleep(duration_s)
    wanted = {*MIX, "/finetune_start"}
    while not wanted <= recorder.covered() and time.perf_counter() - begun < duration_s + COVERAGE_GRACE_S:
        gevent.sleep(1)
    recorder.mark("leaving")  # the memory with the whole class there (the sampler's nearest sample)
    runner.quit()  # every student closes their tab (on_stop)
    runner.greenlet.join()


def section(runs: list[dict[str, Any]]) -> Section:
    """The bench's rows per class: calls without errors, each endpoint's p95 against its target, memory
    growth after warm-up, the fine-tune run."""
    rows = []
    for d in runs:
        prefix = f"{d['students']} students: " if len(runs) > 1 else ""
        ok = 100.0 * (d["calls"] - d["errors"]) / d["calls"] if d["calls"] else None
        rows.append(
            Row(
                f"{prefix}calls answered without an error",
                ok,
                "%",
                better="higher",
                target=100,
                note=f"{d['students']} students, {d['load_s']:.0f} s, {d['calls']} calls, "
                f"{d['errors']} errors, {d['calls_per_s'] or 0:.2f} calls/s",
            )
        )
        for name, e in d["endpoints"].items():
            note = (
                f"{e['calls']} calls, {e['errors']} errors, p50 {seconds(e['p50_s'])}, "
                f"max {seconds(e['max_s'])}" + (f", alone {seconds(e['alone_s'])}" if e["alone_s"] else "")
            )
            target = round(p95_target(e), 2)
            rows.append(Row(f"{prefix}{name} p95 ({e['kind']})", e["p95_s"], "s", note=note, target=target))
        m, f = d["memory"], d["finetune"]
        memory_note = (
            f"{megabytes(m['start_mb'])} at start, {megabytes(m['warm_mb'])} warm, "
            f"{megabytes(m['class_there_mb'])} with the class there, {megabytes(m['left_mb'])} after they "
            f"left; trend over the class's second half {m['second_half_slope_mb_per_min'] or 0:.1f} MB/min"
        )
        rows.append(
            Row(
                f"{prefix}server memory kept after the class left (above warm)",
                m["left_growth_mb"],
                "MB",
                target=MEMORY_GROWTH_TARGET_MB,
                note=memory_note,
            )
        )
        rows.append(
            Row(f"{prefix}{FINETUNE_RUN}", f["seconds"], "s", note=f"tiny random Llama: {f['status']}")
        )
    files = [d["files"]["table"] for d in runs]
    return Section(TITLE, rows, {"runs": runs, "tables": files})


def run(
    quick: bool, students: int | list[int] = 10, minutes: float = 2.0, out: Path | None = None
) -> Section:
    """Classes of ``students`` (one size or several) for ``minutes`` each; ``quick``: 3 students, 20 s."""
    sizes = [students] if isinstance(students, int) else list(students)
    if quick:
        sizes, minutes = [3], 1 / 3
    runs = run_classes(sizes, minutes, out or OUT)
    print(f"classroom: tables, JSON and plots in {out or OUT}", file=sys.stderr)
    return section(runs)
