"""A run's table (Markdown), figure (PNG: latency per endpoint, memory over time) and JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import number

CHEAP_P95_TARGET_S = 2.0
MEMORY_GROWTH_TARGET_MB = 100.0


def p95_target(entry: dict[str, Any]) -> float:
    """Cheap events: :data:`CHEAP_P95_TARGET_S`; model events: their fair-share bound."""
    return CHEAP_P95_TARGET_S if entry["kind"] == "cheap" else entry["bound_s"]


def seconds(value: float | None) -> str:
    return "" if value is None else f"{number(value)} s"


def megabytes(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f} MB"


def endpoint_table(details: dict[str, Any]) -> str:
    """The per-endpoint table, then the memory, warm-up and fine-tune lines."""
    lines = [
        f"**{details['students']} students, {details['load_s']:.0f} s**: {details['calls']} calls, "
        f"{details['errors']} errors, {number(details['calls_per_s'] or 0.0)} calls/s",
        "",
        "| endpoint | kind | calls | errors | p50 | p95 | max | alone | p95 target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, e in details["endpoints"].items():
        target = p95_target(e)
        met = "" if e["p95_s"] is None else (": yes" if e["p95_s"] <= target else ": NO")
        times = [seconds(e[key]) for key in ("p50_s", "p95_s", "max_s", "alone_s")]
        sign = "<" if e["kind"] == "cheap" else "≤"
        lines.append(
            "| " + " | ".join([name, e["kind"], str(e["calls"]), str(e["errors"]), *times]) + f" | {sign} "
            f"{seconds(target)}{met} |"
        )
    m, f, w = details["memory"], details["finetune"], details["warm_up"]
    ran = f", {number(f['seconds'])} s from start to end" if f["seconds"] is not None else ""
    lines += [
        "",
        f"Server memory (RSS): {megabytes(m['start_mb'])} at start, {megabytes(m['warm_mb'])} warm, "
        f"{megabytes(m.get('class_there_mb'))} with the class there "
        f"({megabytes(m['growth_mb'])} above warm), "
        f"{megabytes(m.get('left_mb'))} after they left ({megabytes(m.get('left_growth_mb'))} above warm; "
        f"target < {MEMORY_GROWTH_TARGET_MB:g} MB); trend over the class's second half "
        f"{number(m.get('second_half_slope_mb_per_min') or 0.0)} MB/min, peak {megabytes(m['peak_mb'])}; "
        f"fine-tune worker peak {megabytes(m['peak_workers_mb'])}.",
        f"Fine-tune run: {f['status']}{ran}. "
        + (
            f"Warm-up: topic fit {number(w['topics_fit_s'])} s, all of it {number(w['seconds'])} s."
            if w
            else "The server was warm (a class before this one)."
        ),
    ]
    return "\n".join(lines)


def summary_table(runs: list[dict[str, Any]]) -> str:
    """One line per class size: errors, throughput, p95 of each endpoint, memory growth."""
    names = list(runs[0]["endpoints"])
    lines = [
        "| students | calls | errors | calls/s | "
        + " | ".join(f"{n} p95" for n in names)
        + " | memory, class there | memory after they left | trend, 2nd half |",
        "| " + " | ".join(["---"] * (len(names) + 7)) + " |",
    ]
    for d in runs:
        p95s = [seconds(d["endpoints"][n]["p95_s"]) for n in names]
        cells = [
            str(d["students"]),
            str(d["calls"]),
            str(d["errors"]),
            number(d["calls_per_s"] or 0.0),
            *p95s,
        ]
        m = d["memory"]
        memory = [
            f"+{megabytes(m['growth_mb'])}",
            f"+{megabytes(m.get('left_growth_mb'))}",
            f"{number(m.get('second_half_slope_mb_per_min') or 0.0)} MB/min",
        ]
        lines.append("| " + " | ".join([*cells, *memory]) + " |")
    return "\n".join(lines)


def plot(details: dict[str, Any], path: Path) -> Path:
    """Latency percentiles per endpoint (log scale, targets marked) beside the server's memory over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = {n: e for n, e in details["endpoints"].items() if e["calls"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    names = list(endpoints)
    xs = list(range(len(names)))
    width = 0.27
    for offset, key, label in ((-width, "p50_s", "p50"), (0.0, "p95_s", "p95"), (width, "max_s", "max")):
        left.bar([x + offset for x in xs], [endpoints[n][key] for n in names], width, label=label)
    left.scatter(
        xs, [p95_target(endpoints[n]) for n in names], marker="_", s=500, color="black", label="p95 target"
    )
    left.set_yscale("log")
    left.set_xticks(xs, names, rotation=30, ha="right")
    left.set_ylabel("seconds per call")
    left.set_title(f"{details['students']} students, {details['load_s']:.0f} s: latency per endpoint")
    left.legend()
    samples, marks = details["memory"]["samples"], details["marks"]
    if samples:
        times = [s[0] for s in samples]
        right.plot(times, [s[1] for s in samples], label="app (RSS)")
        if any(s[2] for s in samples):
            right.plot(times, [s[2] for s in samples], label="fine-tune worker (RSS)")
    right.axvspan(
        marks["load_start"], marks["load_end"], color="tab:green", alpha=0.12, label="students at work"
    )
    if marks["warm"] > marks["start"]:
        right.axvline(marks["warm"], linestyle=":", color="grey", label="warmed up")
    if "left" in marks:
        right.axvline(marks["left"], linestyle="--", color="grey", label="tabs closed and freed")
    right.set_xlabel("seconds")
    right.set_ylabel("MB")
    right.set_title("server memory")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(details: dict[str, Any], out: Path, stem: str) -> dict[str, str]:
    """The table (``.md``), every measure (``.json``) and the figure (``.png``) of one run; their paths."""
    table_path, json_path, png_path = (out / f"{stem}{suffix}" for suffix in (".md", ".json", ".png"))
    table_path.write_text(endpoint_table(details) + "\n", encoding="utf-8")
    plot(details, png_path)
    files = {"table": str(table_path), "json": str(json_path), "plot": str(png_path)}
    json_path.write_text(json.dumps({**details, "files": files}, indent=2), encoding="utf-8")
    return files
