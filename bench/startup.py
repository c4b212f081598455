"""The ``startup`` section: how long the app takes to import and to serve its first page.

Both run in fresh interpreters started from the repository root, exactly as ``python app.py`` is run there.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

from bench import ROOT
from bench.report import Row, Section

TITLE = "Start-up"


def child_env(**extra: str) -> dict[str, str]:
    """This environment, offline and without Gradio's analytics, for a child interpreter."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "GRADIO_ANALYTICS_ENABLED": "False",
        **extra,
    }


IMPORT_RATIO_TARGET = 1.15  # `import app` within 15 % of `import gradio`: "Gradio plus little"


def import_seconds(module: str) -> float:
    """Seconds for a fresh interpreter (in the repository root) to import ``module``."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def paired_import_seconds(pairs: int = 3) -> tuple[float, float]:
    """Median seconds of ``import app`` and of ``import gradio``, run in alternating pairs so that both
    see the same machine (disk cache, load from other work)."""
    app_runs, gradio_runs = [], []
    for _ in range(pairs):
        gradio_runs.append(import_seconds("gradio"))
        app_runs.append(import_seconds("app"))
    return statistics.median(app_runs), statistics.median(gradio_runs)


def first_page_seconds(timeout: float = 120.0) -> float:
    """Seconds from starting ``python app.py`` (in the repository root) until its page answers ``GET /``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = child_env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"the app did not answer within {timeout:.0f} s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def run(quick: bool) -> Section:
    """App import time (median of 3, 1 when ``quick``) and time to first page."""
    app_s, gradio_s = paired_import_seconds(2 if quick else 5)
    details = {"import_s": app_s, "gradio_import_s": gradio_s, "first_page_s": first_page_seconds()}
    rows = [
        Row(
            "import app (no model loaded)",
            app_s,
            "s",
            baseline=gradio_s,
            min_ratio=1 / IMPORT_RATIO_TARGET,
            note=f"baseline: import gradio, paired runs; import app ÷ import gradio = {app_s / gradio_s:.2f} "
            f"(target ≤ {IMPORT_RATIO_TARGET})",
        ),
        Row("time to first page (python app.py until GET / answers)", details["first_page_s"], "s"),
    ]
    return Section(TITLE, rows, details)
