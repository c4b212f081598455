"""The classroom load harness (``bench/classroom``): its arithmetic, and one short real run.

The real run (marked ``load``, outside ``make test``: ``pytest -m load``) launches the app as
``make loadtest`` does and sends 3 students for about 20 s: it checks what the harness reports (every
endpoint, the counts, no errors, the files), never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio import Request

from bench import ROOT
from bench.classroom import MIX, fair_share_bound
from bench.classroom.figures import endpoint_table, summary_table
from bench.classroom.measures import Recorder, percentile, summarize

ENDPOINTS = [*MIX, "/finetune_start", "/finetune_status"]


def test_percentiles_interpolate_between_ranks_as_numpy_does():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5 and percentile([7.0], 95) == 7.0
    assert percentile(list(map(float, range(101))), 95) == 95.0


def test_the_fair_share_bound_is_the_time_alone_plus_one_turn_of_every_other_students_share():
    assert fair_share_bound(0.5, 0.2, students=1, model_share=0.5) == 0.5  # alone: no one to wait for
    assert fair_share_bound(0.5, 0.2, students=61, model_share=0.5) == pytest.approx(0.5 + 60 * 0.5 * 0.2)
    assert fair_share_bound(0.5, 0.2, 30, 0.5) < fair_share_bound(0.5, 0.2, 60, 0.5)


def test_the_students_http_client_reads_answers_and_errors_as_gradio_client_does():
    import gradio as gr

    from bench.classroom.api import ApiError, LabAPI
    from tests.helpers import free_port

    def double(x: int) -> int:
        """Twice x, and no negatives."""
        if x < 0:
            raise gr.Error("no negatives")
        return 2 * x

    def pair(a: str) -> list[str]:
        """One output that is a list."""
        return [a, a]

    closed: list[str] = []

    def unloaded(request: Request) -> None:  # a module-level name: the annotation is read as a string
        closed.append(request.session_hash)

    with gr.Blocks() as demo:
        gr.api(double, api_name="double")
        gr.api(pair, api_name="pair")
        demo.unload(unloaded)
    demo.queue().launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True
    )
    try:
        api = LabAPI(demo.local_url)
        assert api.call("/double", 21) == 42 and api.call("pair", "x") == ["x", "x"]
        with pytest.raises(ApiError, match="^no negatives$"):
            api.call("/double", -1)
        with pytest.raises(ApiError, match="HTTP 5|HTTP 4"):
            api.call("/no_such_endpoint", 1)
        # A student's tab: open while they work, closed when they leave, and the server sees it close
        # (the page's unload events run, as for a browser tab: what frees the session in the lab).
        api.open_page()
        assert api.call("/double", 1) == 2 and closed == []
        api.close_page()
        deadline = time.monotonic() + 30
        while not closed and time.monotonic() < deadline:
            time.sleep(0.2)
        assert closed == [api.session_hash]
    finally:
        demo.close()


def _recorded() -> Recorder:
    """A run of 2 students as the recorder would have seen it (times are made up, counts are the point)."""
    recorder = Recorder(t0=0.0)
    recorder.marks.update(
        start=0.0, warm=10.0, load_start=10.0, leaving=40.0, load_end=40.0, end=45.0, left=60.0
    )
    recorder.memory = [(0.0, 200.0, 0.0), (10.0, 1000.0, 0.0), (25.0, 1010.0, 300.0), (30.0, 1012.0, 0.0)]
    recorder.memory += [(35.0, 1014.0, 0.0), (40.0, 1016.0, 0.0), (45.0, 1020.0, 0.0), (60.0, 1005.0, 0.0)]
    for i, name in enumerate(MIX):
        recorder.on_request(name, response_time=100.0 * (i + 1))
        recorder.on_request(name, response_time=300.0 * (i + 1))
    recorder.on_request("/tokenize", response_time=5000.0, exception=TimeoutError("no answer"))
    return recorder


def test_summarize_counts_every_endpoint_its_errors_and_the_memory_milestones():
    alone = {name: 0.1 for name in MIX}
    details = summarize(
        _recorded(), students=2, minutes=0.5, warm={"alone_s": alone, "topics_fit_s": 3.0, "seconds": 5.0}
    )
    assert list(details["endpoints"]) == ENDPOINTS
    assert details["calls"] == 2 * len(MIX) + 1 and details["errors"] == 1
    tokenize = details["endpoints"]["/tokenize"]
    assert (tokenize["calls"], tokenize["errors"], tokenize["max_s"]) == (3, 1, 5.0)
    assert details["endpoints"]["/finetune_status"]["calls"] == 0
    assert details["endpoints"]["/finetune_status"]["p95_s"] is None
    for name, (_, kind) in MIX.items():
        entry = details["endpoints"][name]
        assert entry["p50_s"] <= entry["p95_s"] <= entry["max_s"]
        assert ("bound_s" in entry) == (kind == "model")
    memory = details["memory"]
    assert (memory["start_mb"], memory["warm_mb"], memory["end_mb"]) == (200.0, 1000.0, 1020.0)
    assert memory["growth_mb"] == 16.0 and memory["peak_workers_mb"] == 300.0  # the class there, at 40 s
    assert memory["left_growth_mb"] == 5.0  # after they left: what their sessions kept
    assert memory["second_half_slope_mb_per_min"] == pytest.approx(24.0)  # 25–40 s: 0.4 MB/s
    assert details["load_s"] == 30.0 and details["finetune"] == {"status": "not started", "seconds": None}
    table = endpoint_table(details)
    assert "| endpoint | kind | calls | errors | p50 | p95 | max | alone | p95 target |" in table
    assert all(f"| {name} |" in table for name in ENDPOINTS)
    assert "| /tokenize | cheap | 3 | 1 |" in table and "| /finetune_status | cheap | 0 | 0 |" in table
    assert "Warm-up: topic fit 3.00 s" in table
    later = summarize(_recorded(), students=2, minutes=0.5, warm={"alone_s": alone})  # a second class
    assert later["warm_up"] == {} and "The server was warm" in endpoint_table(later)
    both = summary_table([details, {**details, "students": 4}])
    assert both.splitlines()[2].startswith("| 2 | 15 | 1 |") and both.splitlines()[3].startswith("| 4 |")


@pytest.mark.load  # minutes on 2 cores (the topic fit first): a bench run, outside `make test`
@pytest.mark.timeout(1800)  # the warm-up's topic fit (UMAP on 10,033 documents) takes minutes on 2 busy cores
def test_three_students_for_20_seconds_reach_every_endpoint_without_an_error(tmp_path: Path):
    command = [sys.executable, "-m", "bench", "classroom", "--students", "3", "--minutes", "0.34"]
    out = subprocess.run(
        [*command, "--out", str(tmp_path), "--json"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    section = json.loads(out.stdout)["classroom"]
    (run,) = section["details"]["runs"]
    assert run["students"] == 3 and run["errors"] == 0, run["first_errors"]
    assert list(run["endpoints"]) == ENDPOINTS
    for name in MIX:  # a short run goes on until each endpoint was called
        assert run["endpoints"][name]["calls"] >= 1 and run["endpoints"][name]["errors"] == 0, name
        assert run["endpoints"][name]["alone_s"] > 0, name  # the warm-up called it too
    assert run["endpoints"]["/finetune_start"]["calls"] == 1
    assert run["calls"] == sum(entry["calls"] for entry in run["endpoints"].values())
    assert run["finetune"]["status"] == "done" and run["finetune"]["seconds"] > 0
    memory = run["memory"]
    assert min(memory["start_mb"], memory["warm_mb"], memory["end_mb"]) > 0 and len(memory["samples"]) >= 3
    rows = {row["name"]: row for row in section["rows"]}
    assert rows["calls answered without an error"]["lab"] == 100.0
    assert all(f"{name} p95 ({kind})" in rows for name, (_, kind) in MIX.items())
    table = Path(run["files"]["table"]).read_text()
    assert all(f"| {name} |" in table for name in ENDPOINTS)
    assert Path(run["files"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(run["files"]["json"]).read_text())["calls"] == run["calls"]
