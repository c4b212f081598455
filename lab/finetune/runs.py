"""Run folders: where a run lives and the files through which the app and the training process talk.

Each run has its own folder, ``<LAB_CACHE_DIR>/runs/<id>`` (or under ``output_dir``), never reused:

- ``settings.json``: the config, the method and the plan's estimates, written before the run starts; the
  training process reads its config from here (:func:`read_settings`);
- ``events.jsonl``: one JSON event a line, appended by the training process as it goes (phase, step, loss,
  log lines) and always ending with ``{"type": "end", "status": …}`` (:class:`EventLog`);
- ``cancel``: created to ask the training process to stop at its next micro-batch;
- ``metrics.json``, ``adapter/`` (safetensors and config), ``merged/`` (optional, 16-bit), ``log.txt``
  (the run's log), ``process.log`` (the process's own output: warnings, a crash's traceback).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lab.config import cache_dir
from lab.errors import InputError
from lab.finetune.config import FineTuneConfig
from lab.finetune.estimate import Plan
from lab.finetune.facts import ModelFacts
from lab.finetune.view import gb

RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")
SETTINGS = "settings.json"
METRICS = "metrics.json"
EVENTS = "events.jsonl"
CANCEL = "cancel"
LOG = "log.txt"
PROCESS_LOG = "process.log"
OWNER = "owner"  # who started the run (lab.sessions.owner_of), when a web request did


def runs_dir(output_dir: str | Path | None = None) -> Path:
    """The folder that holds every run folder (``<LAB_CACHE_DIR>/runs`` unless given)."""
    folder = Path(output_dir).expanduser() if output_dir else cache_dir() / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def new_run_dir(output_dir: str | Path | None = None) -> Path:
    """A new, empty run folder named by time and a random suffix; an existing one is never reused."""
    parent = runs_dir(output_dir).absolute()  # the training process may be started elsewhere
    while True:
        folder = parent / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def run_dir(run_id: str, output_dir: str | Path | None = None) -> Path:
    """The folder of a run by id (checked: an id is never a path)."""
    if not RUN_ID.match(run_id or ""):
        raise InputError(f"{run_id!r} is not a run id (like 20260101-120000-0a1b2c3d).")
    folder = runs_dir(output_dir) / run_id
    if not folder.is_dir():
        raise InputError(f"There is no run {run_id}.")
    return folder


def check_disk_space(folder: Path, need: int) -> None:
    """Refuse to start when the output's disk cannot hold the run."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise InputError(
            f"Not enough disk space for the run's output in {folder}: about {gb(need)} needed, "
            f"{gb(free)} free. Free some space or set LAB_CACHE_DIR (or output_dir) elsewhere."
        )


def output_bytes(config: FineTuneConfig, facts: ModelFacts) -> int:
    """Bytes a run writes: the fp32 adapter, and the 16-bit merged model when asked."""
    adapter = facts.lora_parameters(config.r, config.target_modules) * 4
    merged = facts.parameters * 2 if config.merge else 0
    return adapter + merged + 10_000_000


def zip_run(folder: str | Path) -> Path:
    """Pack a finished run folder (adapter, settings, metrics, log; not the merged model) into a zip."""
    folder = Path(folder)
    target = folder / f"{folder.name}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and relative.parts[0] != "merged" and not path.name.startswith(folder.name):
                archive.write(path, f"{folder.name}/{relative}")
    partial.replace(target)
    return target


# -- what the app writes before a run, and the training process reads --------------------------------


def write_settings(folder: Path, config: FineTuneConfig, run_plan: Plan) -> None:
    """Write ``settings.json``: the config, what will run, the estimates and the package versions."""
    settings = {
        "config": config.to_dict(),
        "method": run_plan.method,
        "method_title": run_plan.method_title,
        "device": run_plan.device,
        "total_steps": run_plan.total_steps,
        "train_examples": run_plan.train_examples,
        "eval_examples": run_plan.eval_examples,
        "truncated": run_plan.truncated,
        "trainable_parameters": run_plan.trainable,
        "total_parameters": run_plan.facts.parameters,
        "estimated_seconds": round(run_plan.seconds, 1),
        "estimated_memory_bytes": run_plan.memory_bytes,
        "data_source": run_plan.source,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")


def read_settings(folder: Path) -> tuple[FineTuneConfig, str]:
    """The config and method of a run folder, as :func:`write_settings` wrote them."""
    path = folder / SETTINGS
    if not path.is_file():
        raise InputError(f"{folder} is not a run folder: it has no {SETTINGS}.")
    settings = json.loads(path.read_text())
    return FineTuneConfig.from_dict(settings["config"]), settings["method"]


def _versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


# -- while it runs: events out, cancel in --------------------------------------------------------------


class EventLog:
    """A run's ``events.jsonl``: the training process appends, the app reads what is new.

    A line is read only once it is complete, so a reader never sees half an event.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / EVENTS
        self._offset = 0
        self._partial = b""

    def append(self, event: dict[str, Any]) -> None:
        """Add one event (the writer's side), flushed at once so the app sees it."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")

    def read_new(self) -> list[dict[str, Any]]:
        """The events appended since the last call (the reader's side)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" after a complete line, else the start of the next one
        return [json.loads(line) for line in lines if line.strip()]


def request_cancel(folder: Path) -> None:
    """Ask the run's training process to stop at its next micro-batch."""
    (folder / CANCEL).touch()


def cancel_requested(folder: Path) -> bool:
    return (folder / CANCEL).exists()
