"""Fine-tune runs on a Ray cluster: with ``LAB_RAY_ADDRESS`` set, :func:`lab.finetune.start` submits each
run as a Ray job instead of queueing it in the app's process.

The job's entrypoint is the command the local runner starts, ``python -m lab.finetune.worker RUN_DIR``
(:mod:`lab.finetune.worker`), on the same run folder. Ray queues the jobs and runs as many at once as the
cluster has room for: each asks for one GPU when a node of the cluster has one (else one CPU). The app
follows a job as it follows a local process: the worker appends its events (phase, step and loss, log
lines, the end) to the run folder, the app relays them into the :class:`~lab.finetune.jobs.Job`, and asks
Ray for the job's status (``PENDING`` → queued, ``RUNNING`` → running, ``SUCCEEDED`` / ``FAILED`` /
``STOPPED`` → done, failed or cancelled). Cancel calls Ray's ``stop_job`` (a job still waiting for room
is cancelled in the app at once, and Ray stops it when its turn comes); a job that fails without saying
why shows the last line of its Ray logs, which are also kept as the run folder's ``process.log``.

Settings (environment):

- ``LAB_RAY_ADDRESS``: the Ray dashboard's address, where the job server listens
  (``http://HEAD:8265``). Unset (the default): runs train in processes of the app, one at a time.
- ``LAB_RAY_GPUS``: GPUs a run asks for; default 1 when a live node has a GPU, else 0 (one CPU).
- ``LAB_RAY_PYTHON``: the Python on the cluster's nodes that has the lab's requirements; default the
  app's own interpreter path (right when the nodes are built from the same image, or on one machine).

The run folder must be the same path on the app's machine and on every node: the runs folder
(``<LAB_CACHE_DIR>/runs``, or the config's ``output_dir``) on shared storage. The lab's code travels with
each job (Ray's ``working_dir``: this checkout, without ``.venv`` and what ``.gitignore`` names), so the
job runs the very lab that submitted it; the environment variables that steer the lab and the Hub
(``LAB_*``, ``HF_*``, ``TRANSFORMERS_*``, without logins and tokens) travel too.

Ray is imported here only, and only once a run is submitted: without ``LAB_RAY_ADDRESS`` the lab never
imports it, and it need not be installed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from lab import paths
from lab.errors import LabError
from lab.finetune import runs

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from lab.finetune.jobs import Job

ADDRESS_ENV = "LAB_RAY_ADDRESS"
GPUS_ENV = "LAB_RAY_GPUS"
PYTHON_ENV = "LAB_RAY_PYTHON"
RAY_REQUIREMENT = "ray[default]==2.60.0"
PROBE_TIMEOUT_S = 5.0  # how long the job server may take to answer before it counts as unreachable
POLL_S = 0.5  # how often a followed job's status and events are read
LOST_AFTER_S = 60.0  # a cluster silent for this long fails the run in the app (the job may live on)
SETTLE_S = 5.0  # shared storage may show the worker's last lines a little after Ray reports the end
# What never travels: the app's logins, Hub tokens, and the Ray settings of the app itself.
SECRET_ENV = ("LAB_AUTH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
PASSED_ENV_PREFIXES = ("LAB_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "OMP_", "PYTORCH_")
UPLOAD_EXCLUDES = [".venv", ".git", "test-artifacts", "build", "**/__pycache__", "*.pyc"]


class RayUnavailable(LabError):
    """The Ray cluster of ``LAB_RAY_ADDRESS`` cannot take the run (unreachable, refused, not installed)."""


def address() -> str | None:
    """The Ray job server's address from ``LAB_RAY_ADDRESS`` (``http://`` added), or None when unset."""
    raw = os.environ.get(ADDRESS_ENV, "").strip()
    if not raw:
        return None
    return raw if "://" in raw else f"http://{raw}"


def enabled() -> bool:
    """True when runs go to a Ray cluster."""
    return address() is not None


def submission_id(job: Job) -> str:
    """The Ray job id of a run (its run id, so the dashboard and the run folder name the same run)."""
    return f"lab-{job.id}"


def entrypoint(folder: os.PathLike[str] | str) -> str:
    """The shell command Ray runs: the worker on the run folder, with the cluster's Python.

    No ``--parent``: the job's parent is Ray's job supervisor, not the app, and a run on a cluster may
    outlive the app that submitted it.
    """
    import shlex

    python = os.environ.get(PYTHON_ENV) or sys.executable
    return shlex.join([python, "-m", "lab.finetune.worker", str(folder)])


def runtime_env() -> dict[str, Any]:
    """Ray's runtime environment of a run: this checkout as the working dir, the lab's settings as env."""
    from lab.finetune.jobs import WORKER_ENV

    env = dict(WORKER_ENV)
    for name, value in os.environ.items():
        if (
            name.startswith(PASSED_ENV_PREFIXES)
            and name not in SECRET_ENV
            and not name.startswith("LAB_RAY_")
        ):
            env[name] = value
    return {"working_dir": str(paths.ROOT), "excludes": list(UPLOAD_EXCLUDES), "env_vars": env}


# -- the cluster ---------------------------------------------------------------------------------------

_clients: dict[str, JobSubmissionClient] = {}
_clients_lock = threading.Lock()


def _unreachable(where: str, why: object) -> RayUnavailable:
    return RayUnavailable(
        f"The Ray cluster at {where} cannot be reached ({why}). Start its head (`ray start --head "
        f"--dashboard-host=0.0.0.0`), check {ADDRESS_ENV} (the dashboard's address, like "
        f"http://HEAD:8265), or unset {ADDRESS_ENV} to train on this machine."
    )


def probe(where: str) -> str:
    """The Ray version the job server at ``where`` reports, within :data:`PROBE_TIMEOUT_S` seconds.

    Raises:
        RayUnavailable: nothing answers there, or what answers is not a Ray job server.
    """
    if where.startswith("ray://"):
        raise RayUnavailable(
            f"{ADDRESS_ENV}={where} is a Ray Client address; runs are submitted to the job server, the "
            "dashboard's address (http://HEAD:8265)."
        )
    try:
        with urllib.request.urlopen(f"{where.rstrip('/')}/api/version", timeout=PROBE_TIMEOUT_S) as reply:
            return str(json.loads(reply.read())["ray_version"])
    except urllib.error.HTTPError as error:
        raise _unreachable(where, f"HTTP {error.code}: not a Ray job server?") from error
    except (OSError, ValueError, KeyError) as error:  # refused, timed out, no such host, not JSON
        reason = getattr(error, "reason", None) or error
        raise _unreachable(where, reason) from error


def client(where: str) -> JobSubmissionClient:
    """A job submission client for ``where`` (checked reachable first; one per address)."""
    probe(where)
    with _clients_lock:
        if where not in _clients:
            try:
                from ray.job_submission import JobSubmissionClient
            except ImportError as error:
                raise RayUnavailable(
                    f"{ADDRESS_ENV} is set, but Ray's job client is not installed here: "
                    f"pip install '{RAY_REQUIREMENT}' (or unset {ADDRESS_ENV} to train on this machine)."
                ) from error
            try:
                _clients[where] = JobSubmissionClient(where)
            except (ConnectionError, RuntimeError) as error:
                raise _unreachable(where, error) from error
        return _clients[where]


def gpus_per_run(where: str) -> float:
    """GPUs a run asks for: ``LAB_RAY_GPUS``, else 1 when a live node of the cluster has a GPU, else 0."""
    raw = os.environ.get(GPUS_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if value < 0:
            raise RayUnavailable(f"{GPUS_ENV} must be a number of GPUs (0, 0.5, 1 …), not {raw!r}.")
        return value
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(address=where, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    except Exception as error:  # the state API answers through the same server: it is down or refusing
        raise RayUnavailable(f"The Ray cluster at {where} could not list its nodes: {error}") from error
    return 1.0 if any(node.resources_total.get("GPU", 0) > 0 for node in nodes) else 0.0


# -- a run as a Ray job ----------------------------------------------------------------------------------


def submit(job: Job) -> str:
    """Submit ``job``'s run folder as a Ray job and follow it in a thread; returns the Ray job id.

    Raises:
        RayUnavailable: the cluster cannot be reached or refused the job.
    """
    where = address()
    assert where is not None, f"{ADDRESS_ENV} is not set"
    sid = submission_id(job)
    try:
        jobs_client = client(where)
        gpus = gpus_per_run(where)
        resources = {"entrypoint_num_gpus": gpus} if gpus else {"entrypoint_num_cpus": 1}
        try:
            jobs_client.submit_job(
                entrypoint=entrypoint(job.output_dir),
                submission_id=sid,
                runtime_env=runtime_env(),
                metadata={"lab_run": job.id, "base_model": job.config.base_model, "method": job.method},
                **resources,
            )
        except Exception as error:  # refused (a bad runtime env, a package too large) or gone meanwhile
            raise RayUnavailable(f"The Ray cluster at {where} did not take the run: {error}") from error
    except RayUnavailable:
        shutil.rmtree(job.output_dir, ignore_errors=True)  # no run: no folder that looks like one
        raise
    asked = f"{gpus:g} GPU" if gpus else "1 CPU"
    with job._done:
        job.phase = f"waiting for the Ray cluster (Ray job {sid}, asking for {asked})"
    job._log(
        f"submitted to the Ray cluster at {where} as Ray job {sid} ({asked}): {job.config.base_model} on "
        f"{job.config.dataset}, {job.total_steps} steps"
    )
    threading.Thread(target=_follow, args=(job, jobs_client, sid), name=f"ray-{sid}", daemon=True).start()
    return sid


def _mark_running(job: Job) -> None:
    with job._done:
        if job.status == "queued":
            job.status, job.phase, job.position = "running", "starting", 0
            job.started = time.time()


def _follow(job: Job, jobs_client: JobSubmissionClient, sid: str) -> None:
    """Relay the run folder's events into ``job`` until Ray reports the job's end; stop it on cancel."""
    try:
        _follow_until_end(job, jobs_client, sid)
    except Exception as error:  # never leave a job "running" in the app because following it broke
        if job.active:
            job._finish("failed", f"The lab stopped following Ray job {sid}: {error}")


def _follow_until_end(job: Job, jobs_client: JobSubmissionClient, sid: str) -> None:
    events = runs.EventLog(job.output_dir)
    outcome: dict[str, Any] | None = None
    stop_sent = False
    silent_since: float | None = None
    status = seen = "PENDING"
    while True:
        try:
            status = str(jobs_client.get_job_status(sid))
            silent_since = None
        except Exception as error:  # the head restarting, a network blip: retry for a while
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > LOST_AFTER_S:
                job._finish(
                    "failed",
                    f"The lab lost contact with the Ray cluster ({error}); Ray job {sid} may still be "
                    f"training there, into {job.output_dir}.",
                )
                return
            time.sleep(POLL_S * 4)
            continue
        if status != seen:
            seen = status
            job._log(f"Ray job {sid}: {status}")
        new = events.read_new()  # after the status, so nothing written before the end is missed
        if status == "RUNNING" or new:
            _mark_running(job)
        for event in new:
            if event.get("type") == "end":
                outcome = event
            else:
                job._event(event)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        if job.cancel_requested and not stop_sent:
            stop_sent = True
            job._log(f"cancelling: stopping Ray job {sid}")
            if status == "PENDING":  # a worker that starts after all stops at its first check
                runs.request_cancel(job.output_dir)
            try:
                jobs_client.stop_job(sid)
            except Exception as error:  # it may have ended meanwhile; the next status says
                job._log(f"Ray could not stop job {sid}: {error}")
            if status == "PENDING":
                # Ray delivers the stop once the job's turn comes (it cannot drop a waiting job sooner,
                # ray 2.60): the run is over for the app now, and never trains.
                job._log(f"Ray job {sid} stops when the cluster gets to it")
                job._finish("cancelled")
                return
        time.sleep(POLL_S)
    settle = time.monotonic() + SETTLE_S
    while outcome is None and status != "STOPPED" and time.monotonic() < settle:
        for event in events.read_new():
            if event.get("type") == "end":
                outcome = event
            else:
                job._event(event)
        if outcome is None:
            time.sleep(POLL_S)
    logs = _keep_logs(job, jobs_client, sid)
    if outcome is not None and outcome.get("status") == "done":
        job._finish("done")  # finished before a late cancel reached it: keep the result
    elif job.cancel_requested or status == "STOPPED" or (outcome or {}).get("status") == "cancelled":
        if not job.cancel_requested:
            job._log(f"Ray job {sid} was stopped on the cluster")
        job._finish("cancelled")
    elif outcome is not None:
        job._finish("failed", outcome.get("message") or "the training process failed")
    else:
        job._finish("failed", failure_message(jobs_client, sid, logs))


def _keep_logs(job: Job, jobs_client: JobSubmissionClient, sid: str) -> str:
    """The job's Ray logs (the worker's output), kept as the run folder's ``process.log``."""
    try:
        logs = jobs_client.get_job_logs(sid)
    except Exception:
        return ""
    try:
        with open(job.output_dir / runs.PROCESS_LOG, "a", encoding="utf-8") as handle:
            handle.write(logs)
    except OSError:
        pass
    return logs


def failure_message(jobs_client: JobSubmissionClient, sid: str, logs: str) -> str:
    """Why a Ray job ended without a result, in the lab's words, with the last line it printed."""
    try:
        info = jobs_client.get_job_info(sid)
        code, said = info.driver_exit_code, (info.message or "").strip()
    except Exception:
        code, said = None, ""
    lines = [line for line in logs.strip().splitlines() if line.strip()]
    if code in (-9, 137):
        why = "it was killed (probably out of memory)"
    elif lines:
        why = lines[-1].strip()[:300]
    else:
        why = said.splitlines()[0][:300] if said else "no output"
    return (
        f"The training job failed on the Ray cluster: {why}. The app is unaffected; the run folder's "
        f"{runs.PROCESS_LOG} (or `ray job logs {sid}`) has the rest."
    )
