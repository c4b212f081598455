"""Can the Hugging Face Hub be reached? Asked once, quickly, and remembered for a while.

A laptop on a train or a classroom with a dead uplink cannot reach the Hub, yet nobody set
``HF_HUB_OFFLINE``. huggingface_hub would then retry every lookup with back-off, for every model, on every
page load (minutes for the tokenizer tab). Instead the lab probes the Hub once, with a short time limit,
and while it is unreachable behaves as offline for a while before probing again:

- ``LAB_HUB_PROBE_SECONDS`` (default 3): the probe's time limit;
- ``LAB_HUB_RETRY_MINUTES`` (default 10): how long an unreachable Hub, and a failed download, is
  remembered before the lab tries again.

Concurrent first lookups share one probe. ``HF_HUB_OFFLINE=1`` still means offline, with no probe at all.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from lab import config

_lock = threading.Lock()
_failures: dict[tuple[str, str], tuple[float, str]] = {}  # (model id, part) -> (when, why)


@dataclass
class _Probe:
    reachable: bool | None = None  # None: not probed yet
    checked: float = 0.0  # time.monotonic() of the last probe
    checked_wall: float = 0.0  # time.time() of the same, for people
    detail: str = ""
    probes: int = 0  # how many probes were made (tests count them)


_probe = _Probe()


def endpoint() -> str:
    """The Hub's address (``HF_ENDPOINT`` for mirrors, else huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def probe_seconds() -> float:
    return float(os.environ.get("LAB_HUB_PROBE_SECONDS", "3"))


def retry_seconds() -> float:
    return 60 * float(os.environ.get("LAB_HUB_RETRY_MINUTES", "10"))


def _ask() -> tuple[bool, str]:
    """One HEAD request to the Hub: any HTTP answer below 500 means reachable."""
    import httpx

    try:
        response = httpx.head(endpoint(), timeout=probe_seconds(), follow_redirects=False)
    except Exception as error:  # DNS failure, refused, timed out, TLS: all mean "not from here"
        return False, f"{type(error).__name__}: {str(error)[:120]}".rstrip(": ")
    return response.status_code < 500, f"HTTP {response.status_code}"


def reachable() -> bool:
    """True when the Hub may be asked now: not offline by flag, and the last probe (recent enough) got
    through. Probes at most once per ``LAB_HUB_RETRY_MINUTES`` while unreachable."""
    if config.hub_offline():
        return False
    with _lock:  # one probe at a time: the others wait for its answer (seconds at most)
        if _probe.reachable is None or time.monotonic() - _probe.checked >= retry_seconds():
            _probe.reachable, _probe.detail = _ask()
            _probe.checked, _probe.checked_wall = time.monotonic(), time.time()
            _probe.probes += 1
        return bool(_probe.reachable)


def cached_snapshot(model_id: str) -> str | None:
    """The Hugging Face cache's local folder of ``model_id``, if it holds one (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_id, local_files_only=True)
    except Exception:  # not cached, or not a repo id at all: either way there is no folder
        return None


def why_unreachable() -> str:
    """The reason for a "not available" message while the Hub cannot be used."""
    if config.hub_offline():
        return "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)"
    checked = time.strftime("%H:%M", time.localtime(_probe.checked_wall))
    again = time.strftime("%H:%M", time.localtime(_probe.checked_wall + retry_seconds()))
    return (
        f"the Hugging Face Hub cannot be reached from here ({endpoint()}: {_probe.detail}; checked at "
        f"{checked}, the lab works offline until it checks again at {again})"
    )


def status() -> str:
    """One line for the System panel."""
    if config.hub_offline():
        return "Hugging Face Hub: offline by setting (HF_HUB_OFFLINE=1); only local and packaged models load."
    if _probe.reachable is None:
        return "Hugging Face Hub: not asked yet (it is probed on the first model that needs it)."
    if _probe.reachable:
        return f"Hugging Face Hub: reachable ({endpoint()})."
    return (
        f"Hugging Face Hub: unreachable, working offline: {why_unreachable().split('(', 1)[1].rstrip(')')}."
    )


def remember_failure(model_id: str, part: str, why: str) -> None:
    """Remember that ``model_id``'s ``part`` could not be fetched, so the next request fails at once."""
    with _lock:
        _failures[(model_id, part)] = (time.monotonic(), why)


def recent_failure(model_id: str, part: str) -> str | None:
    """Why ``model_id``'s ``part`` failed to download within ``LAB_HUB_RETRY_MINUTES``, if it did."""
    with _lock:
        found = _failures.get((model_id, part))
        if found is None:
            return None
        when, why = found
        if time.monotonic() - when >= retry_seconds():
            del _failures[(model_id, part)]
            return None
        return why


def forget() -> None:
    """Forget the probe and every remembered failure (tests; or after the network came back)."""
    with _lock:
        _failures.clear()
        _probe.reachable, _probe.checked, _probe.checked_wall, _probe.detail = None, 0.0, 0.0, ""
        _probe.probes = 0
