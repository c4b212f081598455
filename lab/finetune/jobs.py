"""Runs as jobs: :func:`start` checks a config, writes its run folder and queues it; one :class:`Runner`
per process trains the queued runs one at a time, each in a process of its own.

The training process is a command, ``python -m lab.finetune.worker RUN_DIR`` (:mod:`lab.finetune.worker`),
started with :mod:`subprocess`: nothing of the caller is re-imported, so :func:`start` works the same from
the app, a notebook or a plain script (no ``if __name__ == "__main__":`` needed). The runner relays the
events the process appends to the run folder into the :class:`Job`, asks it to stop through a ``cancel``
file (and ends it when it does not stop within :data:`CANCEL_GRACE_S`), and reports a crash with its exit
code, leaving the app unaffected.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lab
from lab.errors import InputError, LabError
from lab.finetune import ray_jobs, runs
from lab.finetune.config import METHOD_TITLES, FineTuneConfig
from lab.finetune.estimate import Plan, plan
from lab.sessions import NotYours, check_owner

Status = Literal["queued", "running", "done", "cancelled", "failed"]
ACTIVE: tuple[str, ...] = ("queued", "running")
MAX_QUEUED = 16
CANCEL_GRACE_S = 2.0  # a run that does not stop by itself within this is terminated
POLL_S = 0.2  # how often the runner reads a running process's events
# OpenMP's default spinning threads slow training tenfold when the cores are shared with the app or other
# jobs; a caller's own setting wins.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
PROJECT_ROOT = Path(lab.__file__).resolve().parent.parent  # the folder that holds this `lab` package


class FineTuneError(LabError, RuntimeError):
    """A run failed (the message says why: out of memory, a crash, a bad input found while loading)."""


@dataclass
class RunResult:
    """How a run ended: its adapter, losses, steps, seconds and exactly what ran (``method``)."""

    run_id: str
    status: str
    base_model: str
    output_dir: Path
    adapter_dir: Path | None
    merged_dir: Path | None
    losses: list[tuple[int, float]]
    eval_losses: list[tuple[int, float]]
    steps: int
    seconds: float
    method: str
    tokens: int


class Job:
    """One run: queued, then running in its own process, then done, cancelled or failed.

    Attributes are updated from the run's process as it trains; read them any time, or take a
    consistent copy with :meth:`snapshot`.
    """

    def __init__(
        self, config: FineTuneConfig, run_plan: Plan, folder: Path, runner: Runner, owner: str | None = None
    ) -> None:
        self.config = config
        self.owner = owner  # who started it (lab.sessions.owner_of); None: started from Python
        self.plan = run_plan
        self.output_dir = folder
        self.id = folder.name
        self.method = run_plan.method
        self.status: Status = "queued"
        self.phase = "queued"
        self.position = 0
        self.step = 0
        self.total_steps = run_plan.total_steps
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.learning_rates: list[tuple[int, float]] = []
        self.tokens = 0
        self.trainable: int | None = None
        self.logs: deque[str] = deque(maxlen=400)
        self.error: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.training_started: float | None = None
        self.finished: float | None = None
        self.result: RunResult | None = None
        self.pid: int | None = None  # of the training process, while it runs
        self._runner = runner
        self._done = threading.Condition()
        self._cancel = threading.Event()

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left: from the pace of the steps so far, else the plan's estimate."""
        if self.status != "running":
            return None
        if self.step and self.training_started:
            pace = (time.time() - self.training_started) / self.step
            return pace * (self.total_steps - self.step)
        return self.plan.seconds

    def snapshot(self, log_lines: int = 40) -> dict[str, Any]:
        """A JSON-ready copy of the job's state (``/finetune_status`` returns it without ``output_dir``)."""
        with self._done:
            return {
                "job_id": self.id,
                "status": self.status,
                "phase": self.phase,
                "position": self.position,
                "step": self.step,
                "total_steps": self.total_steps,
                "losses": [list(p) for p in self.losses],
                "eval_losses": [list(p) for p in self.eval_losses],
                "learning_rates": [list(p) for p in self.learning_rates],
                "lr": self.learning_rates[-1][1] if self.learning_rates else None,
                "tokens": self.tokens,
                "elapsed_s": round(self.elapsed, 1),
                "eta_s": None if self.eta_seconds is None else round(self.eta_seconds, 1),
                "method": self.method,
                "method_title": METHOD_TITLES.get(self.method, self.method),
                "base_model": self.config.base_model,
                "output_dir": str(self.output_dir),
                "error": self.error,
                "logs": list(self.logs)[-log_lines:] if log_lines else [],
            }

    # -- acting ----------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the run: a queued one leaves the queue; a running one ends within a few seconds."""
        self._cancel.set()
        self._runner._cancelled(self)

    def cancel_and_wait(self, timeout: float = 8.0) -> None:
        """Cancel, then wait up to ``timeout`` seconds for the run to end (a page's Cancel button)."""
        self.cancel()
        with self._done:
            self._done.wait_for(lambda: not self.active, timeout)

    def wait(self, timeout: float | None = None) -> RunResult:
        """Block until the run ends and return its :class:`RunResult` (also when cancelled).

        Raises:
            TimeoutError: still running after ``timeout`` seconds.
            FineTuneError: the run failed (the message says why).
        """
        with self._done:
            if not self._done.wait_for(lambda: not self.active, timeout):
                raise TimeoutError(f"run {self.id} is still {self.status} after {timeout} s")
        if self.status == "failed":
            raise FineTuneError(self.error or "the run failed")
        assert self.result is not None
        return self.result

    # -- updates from the runner (its thread only) -------------------------------------------------
    def _log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        for line in text.rstrip().splitlines() or [""]:
            self.logs.append(f"{stamp} {line}")
            with open(self.output_dir / runs.LOG, "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {line}\n")

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._done:
            if kind == "log":
                self._log(event["text"])
            elif kind == "phase":
                self.phase = event["phase"]
                if event["phase"] == "training":
                    self.training_started = time.time()
            elif kind == "plan":
                self.total_steps = event["total_steps"]
                self.trainable = event.get("trainable")
                self.method = event.get("method", self.method)
            elif kind == "step":
                self.step = event["step"]
                self.losses.append((event["step"], event["loss"]))
                self.learning_rates.append((event["step"], event["lr"]))
                self.tokens = event.get("tokens", self.tokens)
            elif kind == "eval":
                self.eval_losses.append((event["step"], event["loss"]))
            elif kind == "error":
                self.error = event["message"]
                self._log(f"error: {event['message']}")

    def _finish(self, status: Status, error: str | None = None) -> None:
        with self._done:
            self.status = status
            self.phase = status
            self.position = 0
            self.error = error or self.error
            self.finished = time.time()
            if status == "failed":
                self._log(f"failed: {self.error}")
            elif status == "cancelled":
                self._log("cancelled")
            adapter = self.output_dir / "adapter"
            merged = self.output_dir / "merged"
            self.result = RunResult(
                run_id=self.id,
                status=status,
                base_model=self.config.base_model,
                output_dir=self.output_dir,
                adapter_dir=adapter if status == "done" and adapter.is_dir() else None,
                merged_dir=merged if status == "done" and merged.is_dir() else None,
                losses=list(self.losses),
                eval_losses=list(self.eval_losses),
                steps=self.step,
                seconds=(self.finished - self.started) if self.started else 0.0,
                method=self.method,
                tokens=self.tokens,
            )
            self._done.notify_all()


class Runner:
    """Runs queued jobs one at a time, each in a fresh process; one per app process (:data:`RUNNER`)."""

    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.max_queued = max_queued
        # Raises a LabError to refuse (owner, steps requested, steps used) before a run is created: the
        # classroom's fine-tune quota (lab.classroom).
        self.admit: Callable[[str | None, int, int], None] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[Job] = []
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> Job:
        if ray_jobs.enabled():  # LAB_RAY_ADDRESS: the Ray cluster queues and runs it; this process follows
            ray_jobs.submit(job)
            with self._lock:
                self._jobs[job.id] = job
            return job
        with self._lock:
            if len(self._queue) >= self.max_queued:
                raise InputError(
                    f"{len(self._queue)} runs are already waiting; try again when the queue is shorter."
                )
            self._jobs[job.id] = job
            self._queue.append(job)
            self._renumber()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="finetune-runner", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        job._log(
            f"queued: {job.config.base_model} on {job.config.dataset}, {job.total_steps} steps, "
            f"{METHOD_TITLES[job.method]}"
            + (f" (position {job.position} in the queue)" if job.position else "")
        )
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def steps_used(self, owner: str | None) -> int:
        """Steps ``owner``'s runs trained, counting a queued or running run's planned steps in full."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.owner == owner]
        return sum(job.total_steps if job.active else job.step for job in jobs)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    @property
    def current(self) -> Job | None:
        return self._current

    def _renumber(self) -> None:
        for index, queued in enumerate(self._queue, start=1):
            queued.position = index

    def _cancelled(self, job: Job) -> None:
        with self._lock:
            if job in self._queue:
                self._queue.remove(job)
                self._renumber()
                job._finish("cancelled")

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                job = self._queue.pop(0)
                self._renumber()
                self._current = job
            try:
                _run_process(job)
            except Exception as error:  # never let one run stop the queue
                if job.active:
                    job._finish("failed", f"the run could not start: {error}")
            finally:
                with self._lock:
                    self._current = None


RUNNER = Runner()


# -- the training process ---------------------------------------------------------------------------


def worker_command(folder: Path) -> list[str]:
    """The command that trains the run in ``folder``; it stops by itself if this process ends."""
    return [sys.executable, "-m", "lab.finetune.worker", str(folder), "--parent", str(os.getpid())]


def worker_env() -> dict[str, str]:
    """This process's environment (HF_HUB_OFFLINE, LAB_CACHE_DIR … travel along), with this `lab` first.

    The project need not be installed: its root goes first on ``PYTHONPATH``, and ``PYTHONSAFEPATH``
    keeps the current folder off the path, so the process imports the very ``lab`` that launched it.
    """
    env = {**WORKER_ENV, **os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"
    return env


_processes: set[subprocess.Popen] = set()  # running training processes, ended when this process exits


@atexit.register
def _end_processes() -> None:
    for process in list(_processes):
        process.kill()


def _run_process(job: Job) -> None:
    """Start ``job``'s process, relay its events into the job, and enforce cancel and crash handling."""
    with job._done:
        job.status, job.phase, job.position = "running", "starting", 0
        job.started = time.time()
    job._log("starting the training process")
    if job.cancel_requested:
        job._finish("cancelled")
        return
    events = runs.EventLog(job.output_dir)
    with open(job.output_dir / runs.PROCESS_LOG, "ab") as output:
        process = subprocess.Popen(
            worker_command(job.output_dir),
            env=worker_env(),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    _processes.add(process)
    job.pid = process.pid
    outcome: dict[str, Any] | None = None
    cancel_at: float | None = None
    try:
        while True:
            ended = process.poll() is not None  # before reading, so no event written before the end is lost
            for event in events.read_new():
                if event.get("type") == "end":
                    outcome = event
                else:
                    job._event(event)
            if ended:
                break
            if job.cancel_requested:
                now = time.monotonic()
                if cancel_at is None:
                    cancel_at = now
                    runs.request_cancel(job.output_dir)
                    job._log("cancelling …")
                elif now - cancel_at > CANCEL_GRACE_S + 2:
                    process.kill()
                elif now - cancel_at > CANCEL_GRACE_S:
                    # Still busy (loading weights, a long step): end the process; its memory goes with it.
                    process.terminate()
            time.sleep(POLL_S)
    finally:
        _processes.discard(process)
    if outcome is not None and outcome.get("status") == "done":
        job._finish("done")  # finished before a late cancel reached it: keep the result
    elif job.cancel_requested:
        job._finish("cancelled")
    elif outcome is not None:
        job._finish("failed", outcome.get("message") or "the training process failed")
    else:
        job._finish("failed", _crash_message(process.returncode, job.output_dir / runs.PROCESS_LOG))


def _crash_message(code: int, output: Path) -> str:
    """Why a process ended without a result, with the last line it printed (a traceback's last line)."""
    if code in (-9, 137):
        why = "it was killed (probably out of memory)"
    else:
        why = f"exit code {code}, without a result"
        lines = output.read_text(errors="replace").strip().splitlines() if output.is_file() else []
        if lines:
            why += f" ({lines[-1][:300]}; the run folder's {runs.PROCESS_LOG} has the rest)"
    return f"The training process crashed: {why}. The app is unaffected."


def start(config: FineTuneConfig, runner: Runner | None = None, owner: str | None = None) -> Job:
    """Check ``config``, estimate it, create its run folder and queue it; returns at once.

    ``owner`` (:func:`lab.sessions.owner_of` of the web request) is kept with the job and in its folder:
    only that owner may then read, cancel or compare it (:func:`owned_job`, :func:`run_folder`).

    Raises:
        InputError: a bad setting or data set, a model that is not a causal LM, a full disk or queue.
        LabError: the runner's ``admit`` refused it (a student's quota, a paused tab).
        ModelUnavailable, DatasetUnavailable: the model or the data cannot be had here.
    """
    runner = runner or RUNNER
    run_plan = plan(config)
    if runner.admit is not None:
        runner.admit(owner, run_plan.total_steps, runner.steps_used(owner))
    parent = runs.runs_dir(config.output_dir)
    runs.check_disk_space(parent, runs.output_bytes(config, run_plan.facts))
    folder = runs.new_run_dir(config.output_dir)
    runs.write_settings(folder, config, run_plan)
    if owner is not None:
        (folder / runs.OWNER).write_text(owner, encoding="utf-8")
    return runner.submit(Job(config, run_plan, folder, runner, owner))


def get_job(job_id: str) -> Job | None:
    """A job of this process by id (queued, running or finished)."""
    return RUNNER.get(job_id)


def owned_job(job_id: str, owner: str | None) -> Job:
    """The job ``job_id``, if ``owner`` may see it (``None``: a call from Python, not checked).

    Raises:
        InputError: no such job on this server.
        NotYours: the job belongs to another owner (nothing of it is shown).
    """
    job = get_job(job_id)
    if job is None:
        raise InputError(f"No run {job_id!r} on this server.")
    check_owner(job.owner, owner)
    return job


def run_folder(run_id: str, owner: str | None = None) -> Path:
    """The folder of a run: this process's job of that id, else ``<LAB_CACHE_DIR>/runs/<id>``; with an
    ``owner`` (a web request's), only a run that owner started.

    Raises:
        InputError: no run id, or no such run.
        NotYours: the run belongs to someone else (or, from an earlier server, to nobody known).
    """
    if not run_id:
        raise InputError("Train a run first (or wait for yours to finish); then compare.")
    job = get_job(run_id)
    if job is not None:
        check_owner(job.owner, owner)
        return job.output_dir
    folder = runs.run_dir(run_id)
    if owner is not None:
        recorded = folder / runs.OWNER
        if not recorded.is_file() or recorded.read_text(encoding="utf-8") != owner:
            raise NotYours()
    return folder
