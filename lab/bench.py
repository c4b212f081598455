"""Measure the lab: ``python -m lab.bench`` prints a table, ``--json`` the same as JSON.

Every figure is measured in this one command on this machine, and speed is reported as a ratio against
a baseline run in the same command, so the numbers compare across machines:

- app import time (a fresh interpreter, median of 3) and time to first page (``python app.py`` until
  ``GET /`` answers);
- ``tokens.compare`` warm latency on the book's sample text across every tokenizer available here (median
  of many runs), against the book's approach of calling ``AutoTokenizer.from_pretrained`` (or building the
  tiktoken encoding) on every call;
- peak resident memory of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"import_s": 3.0, "compare_warm_ms": 20.0, "speedup_vs_reload": 50.0}


def _child_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }


def app_import_seconds(repeats: int = 3) -> float:
    """Median seconds for a fresh interpreter to ``import app``."""
    code = "import time; t = time.perf_counter(); import app; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code],
                cwd=ROOT,
                env=_child_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def first_page_seconds(timeout: float = 120.0) -> float:
    """Seconds from starting ``python app.py`` until its page answers ``GET /``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**_child_env(), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
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


def _book_style_compare(text: str, names: list[str]) -> None:
    """The book's approach: load each tokenizer from its files on every call, then decode each id."""
    from lab import models

    for name in names:
        tokenizer = models.load_tokenizer_uncached(models.locate(name, "tokenizer"))
        if hasattr(tokenizer, "decode_single_token_bytes"):
            ids = tokenizer.encode(text, disallowed_special=())
            [tokenizer.decode_single_token_bytes(i) for i in ids]
        else:
            ids = tokenizer(text)["input_ids"]
            [tokenizer.decode([i]) for i in ids]


def compare_latency(repeats: int, baseline_repeats: int) -> dict[str, Any]:
    """Warm ``tokens.compare`` against reloading every tokenizer on every call."""
    from lab import tokens

    text = tokens.sample_text()
    names = tokens.available()
    tokens.compare(text, names)  # warm: every tokenizer loaded once into the cache
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        tokens.compare(text, names)
        warm.append(time.perf_counter() - started)
    reload = []
    for _ in range(baseline_repeats):
        started = time.perf_counter()
        _book_style_compare(text, names)
        reload.append(time.perf_counter() - started)
    warm_ms, reload_ms = statistics.median(warm) * 1000, statistics.median(reload) * 1000
    return {
        "tokenizers": len(names),
        "compare_warm_ms": warm_ms,
        "reload_every_call_ms": reload_ms,
        "speedup_vs_reload": reload_ms / warm_ms,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kilobytes


def run(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    results["import_s"] = app_import_seconds(1 if quick else 3)
    results["first_page_s"] = first_page_seconds()
    results.update(compare_latency(repeats=20 if quick else 200, baseline_repeats=1 if quick else 3))
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        (
            "app import (no model loaded)",
            f"{results['import_s']:.2f} s",
            f"< {TARGETS['import_s']:.0f} s",
            results["import_s"] < TARGETS["import_s"],
        ),
        ("time to first page", f"{results['first_page_s']:.2f} s", "", None),
        (
            f"compare, {results['tokenizers']} tokenizers, warm (median)",
            f"{results['compare_warm_ms']:.2f} ms",
            f"< {TARGETS['compare_warm_ms']:.0f} ms",
            results["compare_warm_ms"] < TARGETS["compare_warm_ms"],
        ),
        ("same, from_pretrained on every call (book)", f"{results['reload_every_call_ms']:.0f} ms", "", None),
        (
            "speed-up of the cache",
            f"{results['speedup_vs_reload']:.0f}×",
            f"≥ {TARGETS['speedup_vs_reload']:.0f}×",
            results["speedup_vs_reload"] >= TARGETS["speedup_vs_reload"],
        ),
        ("peak RSS of the bench process", f"{results['peak_rss_mb']:.0f} MB", "", None),
    ]
    lines = ["| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for name, value, target, met in rows:
        lines.append(f"| {name} | {value} | {target} | {'' if met is None else ('yes' if met else 'NO')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure the lab's start-up and tokenizer speed.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = run(quick=args.quick)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
