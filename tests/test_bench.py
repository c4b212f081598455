"""`python -m bench` runs and reports what it promises (values are measured, never asserted as times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import ROOT, SECTIONS, report, run_section
from bench.__main__ import main
from bench.report import Row, Section


def _run_bench(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout)


# -- the table and its rows -----------------------------------------------------------------------------


def test_a_row_ratio_says_how_many_times_better_the_lab_is_for_costs_and_for_rates():
    assert Row("a call", 10.0, "ms", baseline=250.0).ratio == 25.0
    assert Row("indexing", 40.0, "img/s", baseline=8.0, better="higher").ratio == 5.0
    assert Row("no baseline", 10.0, "ms").ratio is None and Row("skipped", None, note="why").ratio is None


def test_the_table_marks_targets_on_the_value_and_on_the_ratio():
    text = report.table(
        {
            "startup": Section("Start-up", [Row("app import (no model loaded)", 2.0, "s", target=3.0)]),
            "tokenizers": Section(
                "Tokenizers",
                [
                    Row(
                        "compare, 11 tokenizers, warm (median)",
                        30.0,
                        "ms",
                        baseline=3000.0,
                        target=20.0,
                        min_ratio=50.0,
                    )
                ],
            ),
            "finetune": Section("Fine-tuning", [Row("4-bit", None, note="skipped: no bitsandbytes")]),
        }
    )
    lines = text.splitlines()
    assert lines[0] == "| measure | lab | baseline | ratio | target | note |"
    assert "| **Start-up** | | | | | |" in lines
    assert "| app import (no model loaded) | 2.00 s |  |  | < 3 s: yes |  |" in lines
    assert (
        "| compare, 11 tokenizers, warm (median) | 30.0 ms | 3000 ms | 100× | < 20 ms, ≥ 50×: NO |  |"
        in lines
    )
    assert "| 4-bit |  |  |  |  | skipped: no bitsandbytes |" in lines


def test_an_unknown_section_is_refused_with_the_choices(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["clip", "nonsense"])
    assert exit_info.value.code == 2
    assert "unknown section(s) nonsense; choose from " + ", ".join(SECTIONS) in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown bench section 'nonsense'"):
        run_section("nonsense")


def test_every_section_module_keeps_the_contract():
    import importlib
    import inspect

    for name in SECTIONS:
        module = importlib.import_module(f"bench.{name}")
        assert isinstance(module.TITLE, str) and module.TITLE
        assert list(inspect.signature(module.run).parameters) == ["quick"]


def test_the_topics_and_finetune_tables_read_their_measures():
    from bench import finetune, topics

    topics_section = topics.section(
        {
            "quick": True,
            "documents": 10_033,
            "cuml": "not importable (ImportError): UMAP and HDBSCAN run on the CPU",
            "first_fit_s": 40.0,
            "first_fit_timings": {"umap": 30.0, "hdbscan": 2.0, "total": 40.0},
            "fit_warm_s": 20.0,
            "book_fit_s": 60.0,
            "refit_s": 2.0,
            "book_refit_s": 60.0,
            "refit_reused": ["umap", "map"],
            "interactive_map_s": 3.0,
            "interactive_map_mb": 4.2,
            "n_topics": 60,
            "outlier_share": 0.3,
            "agreement": {"nmi_non_outliers": 0.6, "nmi_all": 0.5, "ari_non_outliers": 0.4, "ari_all": 0.3},
            "refit_topics": 2,
            "refit_outlier_share": 0.1,
            "refit_collapse": "HDBSCAN found only 2 topics.",
            "refit_fix": "Refit with min_cluster_size=45 (36 topics, 30% outliers)",
            "new_corpus": {
                "documents": 4_000,
                "lab_fit_s": [23.0, 24.0],
                "bertopic_fit_s": [20.0, 20.0],
                "lab_topics": 6,
                "bertopic_topics": 6,
                "same_topics_as_bertopic": True,
            },
        }
    )
    refit = next(row for row in topics_section.rows if row.name.startswith("refit"))
    assert refit.ratio == 30.0 and refit.met and "reuses umap, map" in refit.note
    table = report.table({"topics": topics_section})
    assert "| topics (this machine's UMAP layout: reported, not tested) | 60 |" in table  # a count, not 60.0
    new = next(row for row in topics_section.rows if row.name.startswith("fit a new corpus"))
    assert new.ratio == pytest.approx(20 / 23) and not new.met  # 1.15× BERTopic's time: over 1.1×
    assert "lab ≤ 1.1× baseline" in new.target_text() and "same topics as BERTopic: yes" in new.note
    collapsed = next(row for row in topics_section.rows if row.name.startswith("topics after"))
    assert collapsed.lab == 2 and "COLLAPSED" in collapsed.note and "min_cluster_size=45" in collapsed.note
    nmi = next(row for row in topics_section.rows if row.name.startswith("NMI"))
    assert nmi.better == "higher" and nmi.met
    skipped = finetune.section(
        {"classroom_cpu_4bit": "skipped: no bitsandbytes", "book_gpu": "skipped: needs a CUDA GPU"}
    )
    assert [(row.name, row.lab, row.note) for row in skipped.rows] == [
        ("classroom preset, CPU, 4-bit", None, "skipped: no bitsandbytes"),
        ("book settings, TinyLlama-sized, GPU", None, "skipped: needs a CUDA GPU"),
    ]


# -- sections measured on tiny random models --------------------------------------------------------------


def test_tiny_random_clip_bench_measures_indexing_and_search_against_their_baselines(tmp_path: Path):
    from bench import clip as clip_bench
    from lab import clip, testing
    from lab.cache import CACHE

    model = clip.load(testing.write_open_clip(tmp_path / "tiny-clip"))
    indexed = clip_bench.indexing(model, 8)  # it checks itself that all 8 embeddings were computed
    assert all(s.leases == 0 for s in CACHE.stats()), "the bench left a model leased"
    assert indexed["clip_index_images"] == 8 and indexed["clip_index_images_per_s"] > 0
    assert indexed["clip_index_speedup"] == pytest.approx(
        indexed["clip_index_images_per_s"] / indexed["clip_naive_images_per_s"]
    )
    searched = clip_bench.searching([1_000], repeats=3)
    assert set(searched) == {"clip_query_ms_1k", "clip_naive_query_ms_1k", "clip_query_speedup_1k"}
    section = clip_bench.section(
        {
            "clip_model": "ViT-B-32 (random init: no weights here)",
            "clip_device": "cpu",
            "clip_dtype": "float32",
            "clip_text_encode_ms": 30.0,
            **indexed,
            "clip_query_ms_10k": 25.0,
            "clip_naive_query_ms_10k": 500.0,
            "clip_query_speedup_10k": 20.0,
        }
    )
    indexing_row = section.rows[0]
    assert indexing_row.better == "higher"
    assert indexing_row.ratio == pytest.approx(indexed["clip_index_speedup"])
    text = report.table({"clip": section})
    assert "| CLIP search over 10k images (exact, k=8) | 25.0 ms | 500 ms | 20× | < 20 ms: NO |" in text
    assert "1k" not in text


def test_big_gallery_bench_measures_approximate_against_exact_search_and_its_recall():
    from bench import big_gallery

    measured = big_gallery.measure(3_000, 5)
    assert measured["gallery_size"] == 3_000 and 0.9 <= measured["gallery_recall_at_10"] <= 1.0
    assert measured["gallery_speedup"] == pytest.approx(
        measured["gallery_exact_query_ms"] / measured["gallery_approx_query_ms"]
    )
    assert measured["gallery_mapped_same_results"] is True
    assert measured["gallery_code_bytes"] == 128 and measured["gallery_vector_bytes"] == 2048
    section = big_gallery.section(measured)
    search, recall, build, mapped, memory = section.rows
    assert search.ratio == pytest.approx(measured["gallery_speedup"]) and recall.met is True
    assert build.lab == measured["gallery_build_s"] > 0 and mapped.note == "same results as before saving"
    assert memory.ratio == 16
    text = report.table({"big_gallery": section})
    assert "| recall@10 of approximate against exact, 3k |" in text and "≥ 0.95: yes" in text


def test_tiny_random_blip2_bench_reports_speed_and_memory_by_dtype(tmp_path: Path):
    from bench import vision_chat
    from lab import testing

    results = vision_chat.measure(testing.write_blip2(tmp_path / "tiny-blip2"), repeats=1, new_tokens=4)
    for task in ("caption", "chat"):
        assert results[task]["new_tokens"] == 4 and results[task]["ttft_ms"] > 0
        assert results[task]["tokens_per_s"] > 0
    real = results["memory_mb"]["Salesforce/blip2-opt-2.7b"]
    assert 3.7e9 < real["parameters"] < 3.8e9  # ViT-g + Q-Former + OPT-2.7b, counted without weights
    assert 7_000 < real["bfloat16 / float16"] < 8_000 and 14_500 < real["float32"] < 15_500
    rows = {row.name: row for row in vision_chat.section(results).rows}
    assert "caption: time to first token" in rows
    half = rows["weights of Salesforce/blip2-opt-2.7b in bfloat16 / float16"]
    assert half.baseline == real["float32"] and 1.5 < half.ratio < 2.0  # the Q-Former stays in float32


# -- the command itself -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_json_reports_every_measure_and_the_cache_beats_reloading():
    results = _run_bench("startup", "tokenizers", "attention", "--json", "--quick")
    assert list(results) == ["startup", "tokenizers", "attention", "process"]
    for section in results.values():
        assert section["title"] and section["rows"]
        assert {"name", "lab", "baseline", "ratio", "unit", "note", "target", "met"} <= set(
            section["rows"][0]
        )
    assert {"import_s", "first_page_s"} <= set(results["startup"]["details"])
    tokenizers = results["tokenizers"]["details"]
    assert {"compare_warm_ms", "reload_every_call_ms", "speedup_vs_reload"} <= set(tokenizers)
    assert tokenizers["tokenizers"] >= 11  # every offline tokenizer took part
    assert tokenizers["speedup_vs_reload"] > 1  # a ratio measured in the same run, not a wall-clock bound
    assert results["tokenizers"]["rows"][0]["ratio"] == pytest.approx(tokenizers["speedup_vs_reload"])
    attention = results["attention"]["details"]
    assert {
        "attention_64_ms",
        "attention_fresh_ms",
        "next_token_ms",
        "next_token_fresh_ms",
        "logit_lens_ms",
    } <= set(attention)
    assert attention["attention_tokens"] <= 64 and attention["lens_prompt_tokens"] == 10
    assert results["process"]["details"]["peak_rss_mb"] > 0


def test_the_engine_table_reads_its_measures_and_says_when_the_server_is_missing():
    from bench import engine

    here = [4.0 * (i + 1) for i in range(16)]  # one at a time: each waits for those before it
    there = [8.0] * 16  # all together
    details = {
        "requests": 16,
        "new_tokens": 32,
        "cpus": 2,
        "threads": 1,
        "in_process_s": here,
        "engine_s": there,
        "in_process_total_s": max(here),
        "engine_total_s": max(there),
        "in_process_p95_s": engine._p95(here),
        "engine_p95_s": engine._p95(there),
        "in_process_per_request_s": 4.0,
    }
    rows = {row.name: row for row in engine.section(details).rows}
    assert rows["16 concurrent requests: all answered"].ratio == 8.0
    assert rows["16 concurrent requests: p95 latency"].met  # 60 s against 8 s
    skipped = engine.section({"skipped": "no llama-server"}).rows[0]
    assert skipped.lab is None and "no llama-server" in skipped.note
