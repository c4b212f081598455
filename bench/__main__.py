"""``python -m bench [SECTION ...] [--quick] [--json]``: run the bench's sections and print one table."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path

# Before anything imports huggingface_hub: a bench never downloads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import LOAD_SECTIONS, SECTIONS, run_section  # noqa: E402
from bench.report import Row, Section, table  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure the lab against baselines run in the same command."
    )
    parser.add_argument(
        "sections",
        nargs="*",
        metavar="SECTION",
        help=f"sections to run (default: all): {', '.join(SECTIONS)}; "
        f"run only when named: {', '.join(LOAD_SECTIONS)} (a load test of the launched app)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and runs (for tests)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    load = parser.add_argument_group("load test (classroom)")
    load.add_argument(
        "--students", type=int, nargs="+", default=[10], help="class sizes, run in turn (default 10)"
    )
    load.add_argument("--minutes", type=float, default=2.0, help="how long they work (default 2)")
    load.add_argument(
        "--out", type=Path, help="folder for the table, JSON and plot (test-artifacts/loadtest)"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS + LOAD_SECTIONS]
    if unknown:
        choices = ", ".join(SECTIONS + LOAD_SECTIONS)
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {choices}")
    load_options = {"students": args.students, "minutes": args.minutes, "out": args.out}

    sections: dict[str, Section] = {}
    for name in args.sections or SECTIONS:
        print(f"bench: {name}…", file=sys.stderr, flush=True)
        options = load_options if name in LOAD_SECTIONS else {}
        sections[name] = run_section(name, args.quick, **options)
    machine = f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    sections["process"] = Section(
        "This process",
        [Row("peak RSS of the bench process", peak_rss_mb(), "MB", note=machine)],
        {"python": sys.version.split()[0], "cpus": os.cpu_count(), "peak_rss_mb": peak_rss_mb()},
    )
    if args.json:
        print(
            json.dumps({name: section.to_dict() for name, section in sections.items()}, indent=2, default=str)
        )
    else:
        print(table(sections))


if __name__ == "__main__":
    main()
