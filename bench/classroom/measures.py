"""What a run records (every student call, the server's memory, the milestones) and what it adds up to."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.classroom.students import FINETUNE, KINDS, MIX

FINETUNE_RUN = "fine-tune run (start to done)"


@dataclass
class Call:
    endpoint: str
    at: float  # seconds since the recorder's start, when the call began
    seconds: float
    error: str | None = None


@dataclass
class Recorder:
    """One run's calls, memory samples and milestones, in seconds since :attr:`t0`."""

    t0: float = field(default_factory=time.perf_counter)
    calls: list[Call] = field(default_factory=list)
    memory: list[tuple[float, float, float]] = field(default_factory=list)  # (t, app MB, workers MB)
    marks: dict[str, float] = field(default_factory=dict)
    finetune_job: str | None = None
    finetune_session: str | None = None  # the session that started it (only it may read or cancel it)
    finetune_status: str | None = None  # its final status, once it has ended

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def mark(self, name: str) -> None:
        self.marks[name] = self.now()

    def on_request(self, name: str, response_time: float, exception: Any = None, **_: Any) -> None:
        """locust's ``request`` event: one student call ended (``response_time`` in milliseconds)."""
        error = None if exception is None else f"{type(exception).__name__}: {exception}"[:300]
        self.calls.append(Call(name, self.now() - response_time / 1000, response_time / 1000, error))

    def covered(self) -> set[str]:
        """The endpoints called so far."""
        return {call.endpoint for call in self.calls}

    def finetune_started(self, job_id: str, session_hash: str) -> None:
        self.finetune_job, self.finetune_session = job_id, session_hash
        self.mark("finetune_started")

    def finetune_ended(self, status: str | None) -> None:
        self.finetune_status = status or "unknown"
        self.mark("finetune_done")

    def sample_memory(self, pid: int) -> None:
        """The app's resident memory and its child processes' (the fine-tune worker), in MB."""
        import psutil

        try:
            app = psutil.Process(pid)
            rss = app.memory_info().rss
            children = app.children(recursive=True)
        except psutil.Error:
            return
        workers = 0
        for child in children:
            with contextlib.suppress(psutil.Error):  # it ended between the listing and the reading
                workers += child.memory_info().rss
        self.memory.append((self.now(), rss / 2**20, workers / 2**20))

    def memory_at(self, t: float) -> float | None:
        """The app's memory (MB) sampled nearest to ``t``."""
        if not self.memory:
            return None
        return min(self.memory, key=lambda sample: abs(sample[0] - t))[1]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), linear between ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fair_share_bound(alone_s: float, mean_model_alone_s: float, students: int, model_share: float) -> float:
    """The p95 a model event should stay within: its own time alone, plus one turn of every other student's
    share of the model queue (what a fair queue holding one job per student gives).

    Args:
        alone_s: the event's service time on an idle server.
        mean_model_alone_s: the mean service time alone of the mix's model events, weighted by the mix.
        students: the class size.
        model_share: the fraction of a student's clicks that are model events.
    """
    return alone_s + (students - 1) * model_share * mean_model_alone_s


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, MB): MB per second."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else 0.0


def summarize(recorder: Recorder, students: int, minutes: float, warm: dict[str, Any]) -> dict[str, Any]:
    """Per endpoint calls, errors, percentiles and p95 target inputs; memory milestones; the fine-tune run."""
    marks = recorder.marks
    weights = {name: weight for name, (weight, _) in MIX.items()}
    model_names = [name for name, (_, kind) in MIX.items() if kind == "model"]
    model_weight = sum(weights[n] for n in model_names)
    model_share = model_weight / sum(weights.values())
    alone = warm["alone_s"]
    mean_model_alone = sum(alone[n] * weights[n] for n in model_names) / model_weight
    endpoints: dict[str, Any] = {}
    for name in [*MIX, *FINETUNE]:
        calls = [c for c in recorder.calls if c.endpoint == name]
        times = [c.seconds for c in calls]
        entry: dict[str, Any] = {
            "kind": KINDS[name],
            "calls": len(calls),
            "errors": sum(c.error is not None for c in calls),
            "p50_s": percentile(times, 50) if times else None,
            "p95_s": percentile(times, 95) if times else None,
            "max_s": max(times) if times else None,
            "alone_s": alone.get(name),
        }
        if entry["kind"] == "model":
            entry["bound_s"] = fair_share_bound(alone[name], mean_model_alone, students, model_share)
        endpoints[name] = entry
    load_s = marks["load_end"] - marks["load_start"]
    warm_mb, end_mb = recorder.memory_at(marks["warm"]), recorder.memory_at(marks["end"])
    there_mb = recorder.memory_at(marks.get("leaving", marks["end"]))
    left_mb = recorder.memory_at(marks["left"]) if "left" in marks else None
    after_warm = [(t, mb) for t, mb, _ in recorder.memory if t >= marks["warm"]]
    # The second half of the class: every student has arrived and visited every tab, so memory that
    # still rises there grows with time, not with the class's size.
    half = marks["load_start"] + load_s / 2
    second_half = [(t, mb) for t, mb, _ in recorder.memory if half <= t <= marks["load_end"]]
    finetune: dict[str, Any] = {"status": recorder.finetune_status or "not started", "seconds": None}
    if "finetune_done" in marks and "finetune_started" in marks:
        finetune["seconds"] = marks["finetune_done"] - marks["finetune_started"]
    return {
        "students": students,
        "minutes": minutes,
        "load_s": load_s,
        "calls": len(recorder.calls),
        "errors": sum(c.error is not None for c in recorder.calls),
        "calls_per_s": len(recorder.calls) / load_s if load_s else None,
        "model_share": model_share,
        "mean_model_alone_s": mean_model_alone,
        "endpoints": endpoints,
        "warm_up": {k: v for k, v in warm.items() if k != "alone_s"},
        "finetune": finetune,
        "memory": {
            "start_mb": recorder.memory_at(marks["start"]),
            "warm_mb": warm_mb,
            "end_mb": end_mb,
            "peak_mb": max((mb for _, mb in after_warm), default=None),
            "class_there_mb": there_mb,
            "growth_mb": None if warm_mb is None or there_mb is None else there_mb - warm_mb,
            "left_mb": left_mb,
            "left_growth_mb": None if warm_mb is None or left_mb is None else left_mb - warm_mb,
            "slope_mb_per_min": _slope(after_warm) * 60 if len(after_warm) >= 3 else None,
            "second_half_slope_mb_per_min": _slope(second_half) * 60 if len(second_half) >= 3 else None,
            "peak_workers_mb": max((w for _, _, w in recorder.memory), default=0.0),
            "samples": [[round(t, 1), round(mb, 1), round(w, 1)] for t, mb, w in recorder.memory],
        },
        "marks": dict(marks),
        "first_errors": [asdict(c) for c in recorder.calls if c.error][:20],
    }
