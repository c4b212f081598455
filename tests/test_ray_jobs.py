"""Fine-tune runs on a Ray cluster (``LAB_RAY_ADDRESS``): a real local Ray head, the tiny random Llama.

The ``slow`` tests start a head (``ray start --head --block`` with its own ports and temp folder, one CPU)
and submit runs through :func:`lab.finetune.start`, as the tab does: one trains end to end and its adapter
reloads; two more queue on the cluster's single CPU and are cancelled, one while Ray still holds it
``PENDING`` and one mid-training, and both Ray jobs end ``STOPPED``. The head is ended by process id (its
process and what it started), not with ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import finetune
from lab.errors import LabError
from lab.finetune import ray_jobs
from tests.helpers import free_port
from tests.test_finetune import CHATS, tiny, wait_for

RAY = Path(sys.executable).parent / "ray"


@pytest.fixture
def chats_file(tmp_path: Path) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    return path


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def _end_process_tree(root_pid: int) -> None:
    """End a process and everything it started (by id): politely, then for good."""
    import psutil

    try:
        root = psutil.Process(root_pid)
    except psutil.NoSuchProcess:
        return
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=20)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-CPU Ray head with its job server (the dashboard); yields the address for LAB_RAY_ADDRESS."""
    pytest.importorskip("ray.job_submission", reason=f"needs {ray_jobs.RAY_REQUIREMENT}")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    dashboard = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
    }
    command = [
        str(RAY), "start", "--head", "--block", "--num-cpus=1", "--num-gpus=0", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats",
        "--object-store-memory=100000000", *(f"{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    log = open(Path(temp) / "ray-start.log", "wb")  # noqa: SIM115 (open for the head's whole life)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    address = f"http://127.0.0.1:{dashboard}"
    head: subprocess.Popen | None = None
    try:
        for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s for the raylet to register
            head = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            if _head_is_up(head, address, deadline=time.time() + 180):
                break
            _end_process_tree(head.pid)
            if attempt == 2:
                raise RuntimeError(f"ray start failed: {(Path(temp) / 'ray-start.log').read_text()[-3000:]}")
        yield address
    finally:
        if head is not None:
            _end_process_tree(head.pid)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _head_is_up(head: subprocess.Popen, address: str, deadline: float) -> bool:
    """Wait until the job server answers and the head node has registered its CPU."""
    while head.poll() is None and time.time() < deadline:
        try:
            nodes = _get(f"{address}/api/v0/nodes")["data"]["result"]["result"]
            if any(n["state"] == "ALIVE" and n["resources_total"].get("CPU") for n in nodes):
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(1)
    return False


@pytest.fixture
def on_ray(ray_head: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ray_jobs.ADDRESS_ENV, ray_head)
    return ray_head


def _ray_status(address: str, job: finetune.Job) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(address).get_job_status(ray_jobs.submission_id(job)))


def _workers_of(folder: Path) -> list[int]:
    """Processes whose command line names the run folder (the worker, while it lives)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "lab.finetune.worker" in cmdline and str(folder) in cmdline:
            found.append(process.info["pid"])
    return found


# -- without a cluster ---------------------------------------------------------------------------------


def test_ray_is_not_imported_unless_lab_ray_address_is_set():
    env = {k: v for k, v in os.environ.items() if k != ray_jobs.ADDRESS_ENV}
    code = "import sys, lab.finetune, lab.finetune.jobs; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_an_unreachable_ray_address_says_so_and_leaves_no_run(tiny_llama, tmp_path, chats_file, monkeypatch):
    nobody = f"http://127.0.0.1:{free_port()}"  # a free port: nothing listens there
    monkeypatch.setenv(ray_jobs.ADDRESS_ENV, nobody)
    with pytest.raises(ray_jobs.RayUnavailable, match="cannot be reached") as raised:
        finetune.start(tiny(tiny_llama, tmp_path, chats_file), finetune.Runner())
    assert nobody in str(raised.value) and "LAB_RAY_ADDRESS" in str(raised.value)
    assert isinstance(raised.value, LabError)
    assert not list((tmp_path / "runs").iterdir())  # no folder that looks like a run

    monkeypatch.setenv(ray_jobs.ADDRESS_ENV, "ray://127.0.0.1:10001")
    with pytest.raises(ray_jobs.RayUnavailable, match="dashboard's address"):
        finetune.start(tiny(tiny_llama, tmp_path, chats_file), finetune.Runner())


def test_what_a_ray_job_runs_and_carries(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_AUTH", "teacher:secret")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(ray_jobs.ADDRESS_ENV, "http://head:8265")
    monkeypatch.delenv(ray_jobs.PYTHON_ENV, raising=False)
    command = ray_jobs.entrypoint(tmp_path / "run")
    assert command == f"{sys.executable} -m lab.finetune.worker {tmp_path / 'run'}"  # no --parent
    env = ray_jobs.runtime_env()
    assert env["working_dir"] == str(finetune.jobs.PROJECT_ROOT)
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1" and env["env_vars"]["LAB_CACHE_DIR"] == str(tmp_path)
    assert env["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert not {"LAB_AUTH", "HF_TOKEN", ray_jobs.ADDRESS_ENV} & set(env["env_vars"])
    monkeypatch.setenv(ray_jobs.PYTHON_ENV, "/opt/lab/bin/python")
    assert ray_jobs.entrypoint("/runs/x").startswith("/opt/lab/bin/python -m lab.finetune.worker")


# -- on a local Ray head ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_on_ray_trains_end_to_end_and_its_adapter_reloads(on_ray, tiny_llama, tmp_path, chats_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    job = finetune.start(tiny(tiny_llama, tmp_path, chats_file, eval_steps=2), finetune.Runner())
    assert job.status == "queued" and "Ray job lab-" in job.phase
    result = job.wait(timeout=600)

    assert result.status == "done", job.error
    assert [step for step, _ in result.losses] == [1, 2, 3] and all(loss > 0 for _, loss in result.losses)
    assert [step for step, _ in result.eval_losses] == [2, 3]
    assert job.trainable == job.plan.trainable
    assert _ray_status(on_ray, job) == "SUCCEEDED"
    logs = "\n".join(job.logs)
    assert f"Ray job {ray_jobs.submission_id(job)}: RUNNING" in logs and "SUCCEEDED" in logs
    process_log = (result.output_dir / "process.log").read_text()
    assert "lab.finetune.worker" in process_log and "--parent" not in process_log  # Ray's logs, kept
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    reloaded = PeftModel.from_pretrained(base, str(result.adapter_dir))
    trained = [v for k, v in reloaded.state_dict().items() if "lora_B" in k]
    assert trained and any(v.abs().sum() > 0 for v in trained)  # B starts at zero: it trained


@pytest.mark.slow
def test_a_ray_job_that_fails_shows_the_tail_of_its_logs(
    on_ray, tiny_llama, tmp_path, chats_file, monkeypatch
):
    monkeypatch.setenv(ray_jobs.PYTHON_ENV, "/nonexistent/python")  # the shell cannot start the worker
    job = finetune.start(tiny(tiny_llama, tmp_path, chats_file), finetune.Runner())
    with pytest.raises(finetune.FineTuneError, match="failed on the Ray cluster") as raised:
        job.wait(timeout=300)
    assert job.status == "failed" and "/nonexistent/python" in str(raised.value)  # its last line
    assert "process.log" in str(raised.value) and _ray_status(on_ray, job) == "FAILED"
    assert "/nonexistent/python" in (job.output_dir / "process.log").read_text()
    assert "failed" in finetune.view.status_markdown(job.snapshot()).lower()


@pytest.mark.slow
def test_ray_runs_queue_on_the_cluster_and_cancel_stops_their_ray_jobs(
    on_ray, tiny_llama, tmp_path, chats_file
):
    runner = finetune.Runner()
    first = finetune.start(tiny(tiny_llama, tmp_path, chats_file, max_steps=100_000), runner)
    second = finetune.start(tiny(tiny_llama, tmp_path, chats_file, max_steps=100_000), runner)
    wait_for(lambda: first.step >= 2 or not first.active, timeout=600)
    assert first.status == "running", first.error
    # the head's one CPU trains the first: Ray holds the second, and the tab says where it waits
    assert second.status == "queued" and _ray_status(on_ray, second) == "PENDING"
    assert "Queued" in finetune.view.status_markdown(second.snapshot())
    assert "Ray" in finetune.view.status_markdown(second.snapshot())

    second.cancel_and_wait(timeout=30)  # over for the app at once; Ray stops it when its turn comes
    assert second.status == "cancelled" and second.result is not None and second.result.steps == 0

    first.cancel()
    result = first.wait(timeout=60)
    assert result.status == "cancelled" and result.adapter_dir is None
    assert 2 <= result.steps < 100_000
    assert _ray_status(on_ray, first) == "STOPPED"
    wait_for(lambda: not _workers_of(first.output_dir), timeout=30)  # the process, and its memory, are gone
    assert "cancelled" in first.logs[-1]
    wait_for(lambda: _ray_status(on_ray, second) == "STOPPED", timeout=120)  # its turn came: stopped
    assert not (second.output_dir / "adapter").exists() and second.step == 0
