"""The server the students are sent to: ``python app.py`` with tiny models, warmed up as before a class."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import ROOT
from bench.classroom.api import LabAPI
from bench.classroom.students import MIX, SMOLLM2, TOPIC_FIT, Plan, endpoint_inputs

START_TIMEOUT_S = 300.0
FINETUNE_DRAIN_S = 300.0  # after the students leave, how long the class's fine-tune run may take to end
TINY_LLAMA = "tiny-finetune-llama"
ALONE_REPEATS = 3  # an endpoint's time alone: the median of 3 calls on the idle, warm server
CLOSED_GRACE_S = 5.0  # a closed tab's session is freed this long after (LAB_CLOSED_GRACE_S; 60 by default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_tiny_models(folder: Path) -> Path:
    """The tiny random CLIP and BLIP-2 of :mod:`lab.testing` under the book's ids (``LAB_MODEL_DIR``'s
    layout), and a tiny Llama to fine-tune; written by a child interpreter, so that this process never
    imports torch. Returns the Llama's folder."""
    code = (
        "import sys; from pathlib import Path; from lab import catalog, testing; d = Path(sys.argv[1]); "
        "testing.write_open_clip(d / catalog.slug(catalog.CLIP_LAION)); "
        "testing.write_blip2(d / catalog.slug(catalog.BLIP2_OPT)); "
        f"testing.write_llama_causal_lm(d / {TINY_LLAMA!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    # Its output goes to stderr: stdout is the bench's table (or JSON).
    subprocess.run(
        [sys.executable, "-c", code, str(folder)], cwd=ROOT, env=env, check=True, stdout=sys.stderr
    )
    return folder / TINY_LLAMA


@contextlib.contextmanager
def launched_app(model_dir: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python app.py`` from the repository root, offline, on a free port of 127.0.0.1, its output in
    ``log``; yields its URL and process, and stops it on exit."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "LAB_MODEL_DIR": str(model_dir),
        "LAB_CLOSED_GRACE_S": str(CLOSED_GRACE_S),  # so the run can measure what leaving gives back
    }
    for name in ("LAB_CLASSROOM", "LAB_AUTH", "LAB_PRELOAD"):  # served as `python app.py` serves by default
        env.pop(name, None)
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(url, process)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for(url: str, process: subprocess.Popen) -> None:
    import requests

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode} before answering")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/gradio_api/info", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the app did not answer within {START_TIMEOUT_S:.0f} s")


def warm_up(plan: Plan, repeats: int = ALONE_REPEATS) -> dict[str, Any]:
    """The instructor's preparation: the one shared topic fit, then every endpoint once to load its model
    and ``repeats`` times more, their median being its service time alone (seconds)."""
    api, rng = LabAPI(plan.url), random.Random(0)
    started = time.perf_counter()
    api.call("/topics_fit", *TOPIC_FIT)
    fit_s = time.perf_counter() - started
    image = api.upload(plan.image)
    alone: dict[str, float] = {}
    for name in MIX:
        inputs = endpoint_inputs(name, plan, rng, image)
        api.call(name, *inputs)
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            api.call(name, *inputs)
            times.append(time.perf_counter() - began)
        alone[name] = statistics.median(times)
    return {"topics_fit_s": fit_s, "seconds": time.perf_counter() - started, "alone_s": alone}


def settle(plan: Plan) -> None:
    """Wait for the requests the students left behind: one call through the model queue, behind them."""
    LabAPI(plan.url).call("/next_token", "The", SMOLLM2, 1, 1.0, 1.0)


def let_go(plan: Plan) -> None:
    """After the students closed their tabs: wait until the server has freed their sessions (the
    grace, then a few seconds for the unload events and the sweep), then sample the memory: ``left``."""
    time.sleep(CLOSED_GRACE_S + 10)
    plan.recorder.mark("left")


def finish_finetune(plan: Plan) -> None:
    """Wait (at most :data:`FINETUNE_DRAIN_S`) for the class's fine-tune run to end; cancel it otherwise."""
    recorder = plan.recorder
    if recorder.finetune_job is None or recorder.finetune_status is not None:
        return
    api = LabAPI(plan.url, recorder.finetune_session)  # as the student who started it: it is theirs
    deadline = time.monotonic() + FINETUNE_DRAIN_S
    while time.monotonic() < deadline:
        status = api.call("/finetune_status", recorder.finetune_job, 0).get("status")
        if status not in ("queued", "running"):
            recorder.finetune_ended(status)
            return
        time.sleep(2)
    api.call("/finetune_cancel", recorder.finetune_job)
    recorder.finetune_status = f"cancelled: unfinished {FINETUNE_DRAIN_S:.0f} s after the students left"
