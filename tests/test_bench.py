"""`python -m lab.bench` runs and reports what it promises (values are measured, never asserted as times)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_bench_json_reports_every_measure_and_the_cache_beats_reloading():
    out = subprocess.run(
        [sys.executable, "-m", "lab.bench", "--json", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    results = json.loads(out.stdout)
    assert {
        "import_s",
        "first_page_s",
        "tokenizers",
        "compare_warm_ms",
        "reload_every_call_ms",
        "speedup_vs_reload",
        "peak_rss_mb",
    } <= set(results)
    assert results["tokenizers"] >= 11  # every offline tokenizer took part
    assert results["speedup_vs_reload"] > 1  # a ratio measured in the same run, not a wall-clock bound
    assert {
        "attention_64_ms",
        "attention_fresh_ms",
        "next_token_ms",
        "next_token_fresh_ms",
        "logit_lens_ms",
    } <= set(results)
    assert results["attention_tokens"] <= 64 and results["lens_prompt_tokens"] == 10


def test_bench_table_marks_targets():
    from lab.bench import table

    text = table(
        {
            "import_s": 2.0,
            "first_page_s": 3.0,
            "tokenizers": 11,
            "compare_warm_ms": 30.0,
            "reload_every_call_ms": 3000.0,
            "speedup_vs_reload": 100.0,
            "peak_rss_mb": 900.0,
        }
    )
    assert "| app import (no model loaded) | 2.00 s | < 3 s | yes |" in text
    assert "| compare, 11 tokenizers, warm (median) | 30.00 ms | < 20 ms | NO |" in text
