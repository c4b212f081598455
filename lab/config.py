"""The lab's settings, read from the environment in one place.

| variable | meaning | default |
| --- | --- | --- |
| `LAB_MODEL_DIR` | folder of local models, one subfolder per Hub id with `/` written `--` | unset |
| `LAB_CACHE_DIR` | where converted models and unpacked vocabularies are kept | `~/.cache/llm-lab` |
| `LAB_DEVICE` | force a device (`cpu`, `cuda`, `cuda:1`, `mps`) | best available |
| `LAB_GPU_BUDGET_GB`, `LAB_CPU_BUDGET_GB` | model cache memory budget per device | 85 % of GPU, 50 % of RAM |
| `LAB_PRELOAD` | comma-separated model ids to load at start | none |
| `LAB_CLASSROOM` | `1`: bind 0.0.0.0, require `LAB_AUTH`, catalog ids only | off |
| `LAB_AUTH` | `user:password,user2:password2` | unset |
| `LAB_INSTRUCTORS` | logins of `LAB_AUTH` who see the instructor panel (comma-separated) | none |
| `LAB_QUOTA_GPU_SECONDS` | model seconds per student per session (instructors: unlimited; 0: unlimited) | 0 |
| `LAB_QUOTA_FINETUNE_STEPS` | fine-tune steps per student per session (0: unlimited) | 0 |
| `LAB_QUEUE_SIZE` | requests waiting at most in the queue | 64 |
| `LAB_MAX_FILE_SIZE` | largest upload | `20mb` |
| `LAB_MAX_TEXT_CHARS` | longest text the tokenizer tab accepts | 20000 |
| `LAB_REQUEST_SECONDS` | longest a model request may run before it is stopped (0: no limit) | 120 |
| `LAB_MAX_IMAGE_PIXELS` | largest image opened (decompression-bomb guard) | 40000000 |
| `LAB_CLIP_MAX_IMAGES`, `LAB_CLIP_MAX_UPLOAD_MB` | a CLIP gallery upload's caps | see `lab/clip/uploads.py` |
| `LAB_CLIP_APPROX_ABOVE` | CLIP search turns approximate (faiss) above this many images | 50000 |
| `LAB_MAX_UPLOAD_MB_PER_REQUEST` | one upload request, all its files together (more: HTTP 413) | 200 |
| `LAB_MAX_UPLOAD_FILES_PER_REQUEST` | files in one upload request (more: HTTP 413) | 100 |
| `LAB_MAX_UPLOAD_MB_PER_STUDENT` | what a student (login, else address) uploads per hour (more: 429) | 500 |
| `LAB_SESSION_TTL_H` | hours a session's own data (uploads, galleries, chats, topic runs) is kept | 4 |
| `LAB_CLOSED_GRACE_S` | seconds that data outlives its closed browser tab | 60 |
| `GRADIO_SERVER_NAME`, `GRADIO_SERVER_PORT` | where the app listens | 127.0.0.1, 7860 |
| `LAB_REPLICA` | this process's name among several replicas, sent as the `X-Lab-Replica` header | unset |
| `LAB_GENERATION_URL` | OpenAI base URL of a serving engine (vLLM, llama.cpp) for generation | unset |
| `LAB_GENERATION_MODELS` | `lab-id=engine-name,...`: the models the engine serves, by its names | all, same |
| `LAB_GENERATION_KEY` | the engine's API key (`vllm serve --api-key`) | unset |
| `LAB_ENGINE_CONCURRENCY` | generation requests the app sends to the engine at once | 16 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _auth_pairs(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"LAB_AUTH entries must look like user:password, got {item!r}")
        pairs.append((user, password))
    return pairs


def model_dir() -> Path | None:
    """The user's folder of local models (`LAB_MODEL_DIR`), if set."""
    raw = os.environ.get("LAB_MODEL_DIR")
    return Path(raw).expanduser() if raw else None


def cache_dir() -> Path:
    """Where the lab keeps what it converts or unpacks once (`LAB_CACHE_DIR`)."""
    raw = os.environ.get("LAB_CACHE_DIR")
    path = Path(raw).expanduser() if raw else Path.home() / ".cache" / "llm-lab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def request_seconds() -> float:
    """The time limit of one model request in seconds (`LAB_REQUEST_SECONDS`, default 120; 0: none)."""
    raw = os.environ.get("LAB_REQUEST_SECONDS", "").strip()
    try:
        seconds = float(raw) if raw else 120.0
    except ValueError:
        raise ValueError(f"LAB_REQUEST_SECONDS must be a number of seconds, got {raw!r}") from None
    return max(seconds, 0.0)


@dataclass(frozen=True)
class EngineSettings:
    """Where generation runs when it leaves the app's process (:mod:`lab.engine`).

    ``models`` maps the lab's model ids (and ``adapter:<run>`` names of fine-tuned adapters) to the
    engine's names; empty means the engine serves every generation model under the lab's own ids (what
    ``vllm serve <hub id>`` does).
    """

    url: str
    models: dict[str, str] = field(default_factory=dict)
    key: str = ""
    concurrency: int = 16


def _name_map(raw: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        lab_id, sep, name = item.rpartition("=")
        if not sep or not lab_id.strip() or not name.strip():
            raise ValueError(f"LAB_GENERATION_MODELS entries must look like lab-id=engine-name, got {item!r}")
        pairs[lab_id.strip()] = name.strip()
    return pairs


def generation_engine() -> EngineSettings | None:
    """The serving engine for generation (``LAB_GENERATION_URL`` and friends), or None: in process."""
    url = os.environ.get("LAB_GENERATION_URL", "").strip().rstrip("/")
    if not url:
        return None
    return EngineSettings(
        url=url,
        models=_name_map(os.environ.get("LAB_GENERATION_MODELS", "")),
        key=os.environ.get("LAB_GENERATION_KEY", "").strip(),
        concurrency=max(int(os.environ.get("LAB_ENGINE_CONCURRENCY", "16")), 1),
    )


def hub_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (`HF_HUB_OFFLINE=1`)."""
    return _flag("HF_HUB_OFFLINE")


@dataclass(frozen=True)
class Settings:
    """How the app is served. Build with :meth:`from_env`."""

    server_name: str = "127.0.0.1"
    server_port: int = 7860
    classroom: bool = False
    auth: list[tuple[str, str]] = field(default_factory=list)
    instructors: list[str] = field(default_factory=list)
    quota_gpu_seconds: float = 0.0
    quota_finetune_steps: int = 0
    queue_size: int = 64
    max_file_size: str = "20mb"
    max_text_chars: int = 20_000
    preload: list[str] = field(default_factory=list)
    replica: str = ""
    max_upload_mb_per_request: float = 200.0
    max_upload_files_per_request: int = 100
    max_upload_mb_per_student: float = 500.0
    session_ttl_h: float = 4.0
    closed_grace_s: float = 60.0

    @property
    def max_file_bytes(self) -> int:
        """``LAB_MAX_FILE_SIZE`` in bytes ("20mb", "500kb", "1gb" or a number of bytes, as Gradio reads
        it)."""
        size = str(self.max_file_size).strip().lower().replace(" ", "")
        units = {"tb": 2**40, "gb": 2**30, "mb": 2**20, "kb": 2**10, "b": 1}
        unit = next((u for u in units if size.endswith(u)), "b")
        number = size.removesuffix(unit) if size.endswith(unit) else size
        if not number.isdigit():
            raise ValueError(
                f"LAB_MAX_FILE_SIZE must look like 20mb, 500kb or 1048576, got {self.max_file_size!r}"
            )
        return int(number) * units[unit]

    @property
    def session_ttl_s(self) -> float:
        """Seconds a session's own data is kept (``LAB_SESSION_TTL_H``)."""
        return self.session_ttl_h * 3600

    @classmethod
    def from_env(cls) -> Settings:
        classroom = _flag("LAB_CLASSROOM")
        auth = _auth_pairs(os.environ.get("LAB_AUTH", ""))
        default_host = "0.0.0.0" if classroom else "127.0.0.1"
        return cls(
            server_name=os.environ.get("GRADIO_SERVER_NAME", default_host),
            server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
            classroom=classroom,
            auth=auth,
            instructors=[n.strip() for n in os.environ.get("LAB_INSTRUCTORS", "").split(",") if n.strip()],
            quota_gpu_seconds=float(os.environ.get("LAB_QUOTA_GPU_SECONDS", "0")),
            quota_finetune_steps=int(os.environ.get("LAB_QUOTA_FINETUNE_STEPS", "0")),
            queue_size=int(os.environ.get("LAB_QUEUE_SIZE", "64")),
            max_file_size=os.environ.get("LAB_MAX_FILE_SIZE", "20mb"),
            max_text_chars=int(os.environ.get("LAB_MAX_TEXT_CHARS", "20000")),
            preload=[m.strip() for m in os.environ.get("LAB_PRELOAD", "").split(",") if m.strip()],
            replica=os.environ.get("LAB_REPLICA", "").strip(),
            max_upload_mb_per_request=float(os.environ.get("LAB_MAX_UPLOAD_MB_PER_REQUEST", "200")),
            max_upload_files_per_request=int(os.environ.get("LAB_MAX_UPLOAD_FILES_PER_REQUEST", "100")),
            max_upload_mb_per_student=float(os.environ.get("LAB_MAX_UPLOAD_MB_PER_STUDENT", "500")),
            session_ttl_h=float(os.environ.get("LAB_SESSION_TTL_H", "4")),
            closed_grace_s=float(os.environ.get("LAB_CLOSED_GRACE_S", "60")),
        )

    def check(self) -> None:
        """Refuse settings that would serve the lab unsafely."""
        if self.classroom and not self.auth:
            raise ValueError(
                "LAB_CLASSROOM=1 serves the lab on every network interface, so it needs logins: "
                "set LAB_AUTH=user:password[,user2:password2]"
            )
        unknown = sorted(set(self.instructors) - {user for user, _ in self.auth})
        if unknown:
            raise ValueError(
                f"LAB_INSTRUCTORS names {', '.join(unknown)}, who cannot log in: every instructor needs a "
                "login in LAB_AUTH (user:password)"
            )
        if self.quota_gpu_seconds < 0 or self.quota_finetune_steps < 0:
            raise ValueError("LAB_QUOTA_GPU_SECONDS and LAB_QUOTA_FINETUNE_STEPS are 0 (unlimited) or more")
