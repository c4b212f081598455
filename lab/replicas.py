"""Several app replicas behind one proxy with sticky sessions: ``python -m lab.replicas --replicas 2``.

Gradio's queue keeps each session's state inside the process that took it (a call is a
``/gradio_api/queue/join`` followed by a ``/gradio_api/queue/data`` event stream, and uploads, produced
files and logins live there too), so every request of one browser must reach one replica. Caddy does that
with a cookie (``deploy/Caddyfile``); this module starts N ``python app.py`` on consecutive ports of
127.0.0.1 and Caddy in front of them, and stops them all on Ctrl-C.

Each replica names itself (``LAB_REPLICA``) in an ``X-Lab-Replica`` header on every response, so the
proxy's access log, a browser's network panel and a test can all see which replica answered.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lab import paths
from lab.errors import LabError

CADDYFILE = paths.ROOT / "deploy" / "Caddyfile"
HEADER = b"x-lab-replica"


class ReplicaHeader:
    """ASGI middleware that adds ``X-Lab-Replica: <name>`` to every HTTP response (event streams too).

    Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would buffer or break the queue's
    server-sent events.
    """

    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (HEADER, self.name)]}
            await send(message)

        await self.app(scope, receive, send_named)


def middleware(replica: str) -> list[Any]:
    """Middleware for ``launch(app_kwargs={"middleware": ...})``: the replica's header, when it has a name."""
    if not replica:
        return []
    from starlette.middleware import Middleware

    return [Middleware(ReplicaHeader, name=replica)]


@dataclasses.dataclass
class Process:
    """One child process of the deployment and the file its output goes to."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclasses.dataclass
class Deployment:
    """What :func:`running` started: the replicas, the proxy in front, and the proxy's access log."""

    replicas: list[Process]
    proxy: Process
    access_log: Path

    @property
    def url(self) -> str:
        return self.proxy.url

    def processes(self) -> list[Process]:
        return [*self.replicas, self.proxy]


def caddy() -> str:
    """The path of the ``caddy`` binary, or an error that says how to install it."""
    found = shutil.which("caddy") or ("/usr/bin/caddy" if Path("/usr/bin/caddy").exists() else None)
    if not found:
        raise LabError("The replicas run behind Caddy: install it with `apt-get install caddy` (Debian).")
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait_ready(processes: list[Process], path: str, timeout: float) -> None:
    """Wait until every process answers ``GET path`` with 200; fail with its log if one exits first."""
    waiting = list(processes)
    deadline = time.monotonic() + timeout
    while waiting:
        for process in list(waiting):
            code = process.popen.poll()
            if code is not None:
                raise LabError(f"{process.name} exited with code {code}:\n{process.tail()}")
            if _answers(process.url + path):
                waiting.remove(process)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise LabError(f"{names} did not answer within {timeout:.0f} s:\n{waiting[0].tail()}")
        if waiting:
            time.sleep(0.5)


def _stop(process: Process, grace: float = 10.0) -> None:
    if process.popen.poll() is None:
        process.popen.terminate()
        try:
            process.popen.wait(grace)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


def _start(name: str, url: str, command: list[str], env: Mapping[str, str], log: Path) -> Process:
    with log.open("wb") as out:
        # Its own session: Ctrl-C reaches only this launcher, which then stops the children in order.
        popen = subprocess.Popen(
            command,
            cwd=paths.ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name=name, url=url, popen=popen, log=log)


@contextlib.contextmanager
def running(
    ports: list[int],
    proxy_port: int,
    *,
    proxy_host: str = "127.0.0.1",
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> Iterator[Deployment]:
    """Start one ``python app.py`` per port (on 127.0.0.1, named ``replica-1``…) and Caddy on
    ``proxy_host:proxy_port`` in front of them; stop them all on leaving the block.

    ``env`` (default: this process's) is what each replica and the proxy start from. Output goes to
    ``log_dir`` (``replica-<i>.log``, ``proxy.log``, and the proxy's JSON ``access.log``).
    """
    base = dict(os.environ if env is None else env)
    log_dir.mkdir(parents=True, exist_ok=True)
    # Replicas on one machine share its cores: without a limit each one's torch would use them all.
    threads = str(max(1, (os.cpu_count() or 1) // len(ports)))
    started: list[Process] = []
    try:
        for i, port in enumerate(ports, start=1):
            name = f"replica-{i}"
            replica_env = {
                **base,
                "GRADIO_SERVER_NAME": "127.0.0.1",  # only the proxy faces the network
                "GRADIO_SERVER_PORT": str(port),
                "LAB_REPLICA": name,
                "OMP_NUM_THREADS": base.get("OMP_NUM_THREADS", threads),
            }
            url, log = f"http://127.0.0.1:{port}", log_dir / f"{name}.log"
            started.append(_start(name, url, [sys.executable, "app.py"], replica_env, log))
        replicas = list(started)
        access_log = log_dir / "access.log"
        proxy_env = {
            **base,
            "LAB_PROXY_PORT": str(proxy_port),
            "LAB_PROXY_BIND": proxy_host,
            "LAB_UPSTREAMS": " ".join(f"127.0.0.1:{port}" for port in ports),
            "LAB_PROXY_ACCESS_LOG": str(access_log),
            # Caddy keeps its state (an autosaved config, certificate storage) here, not in the home folder.
            "XDG_CONFIG_HOME": str(log_dir / "caddy"),
            "XDG_DATA_HOME": str(log_dir / "caddy"),
        }
        command = [caddy(), "run", "--adapter", "caddyfile", "--config", str(CADDYFILE)]
        local_host = "127.0.0.1" if proxy_host in {"0.0.0.0", "::", ""} else proxy_host
        url, log = f"http://{local_host}:{proxy_port}", log_dir / "proxy.log"
        proxy = _start("proxy", url, command, proxy_env, log)
        started.append(proxy)
        _wait_ready(replicas, "/config", timeout)
        _wait_ready([proxy], "/config", 30)
        yield Deployment(replicas=replicas, proxy=proxy, access_log=access_log)
    finally:
        for process in reversed(started):  # the proxy first: no request reaches a replica that is stopping
            _stop(process)


def main(argv: list[str] | None = None) -> int:
    from lab.config import Settings, cache_dir

    sys.stdout.reconfigure(line_buffering=True)  # the proxy's address shows at once, also under make
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m lab.replicas",
        description="Start N app replicas behind Caddy with sticky sessions; Ctrl-C stops them all.",
    )
    parser.add_argument("--replicas", "-n", type=int, default=2, help="how many app processes (default 2)")
    parser.add_argument(
        "--port", type=int, default=settings.server_port, help="the proxy's port; replicas use the next N"
    )
    parser.add_argument("--host", default=settings.server_name, help="the proxy's address")
    parser.add_argument("--logs", type=Path, default=cache_dir() / "replicas", help="folder for the logs")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    settings.check()  # a classroom proxy on 0.0.0.0 needs LAB_AUTH, as a single app does
    # `kill` (SIGTERM) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ports = [args.port + i for i in range(1, args.replicas + 1)]
    print(f"Starting {args.replicas} replicas on ports {ports[0]}–{ports[-1]}; logs in {args.logs}")
    try:
        with running(ports, args.port, proxy_host=args.host, log_dir=args.logs) as deployment:
            print(f"LLM Lab on {deployment.url}, sticky sessions over {args.replicas} replicas; Ctrl-C stops")
            while True:
                for process in deployment.processes():
                    if process.popen.poll() is not None:
                        print(f"{process.name} exited; its log ends:\n{process.tail()}", file=sys.stderr)
                        return 1
                time.sleep(1)
    except KeyboardInterrupt:
        print("Stopping the replicas and the proxy.")
    except LabError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
