"""Share a finished run's public results: its curves and its before/after answers, read-only.

A run belongs to the student who started it (:mod:`lab.sessions`): its id is not a secret (a time and
32 random bits) and opens nothing for anyone else. Sharing is the owner's explicit act: :func:`publish`
copies what is safe to show into a snapshot under a fresh 128-bit code, and a link carries that code
(``?tab=finetune&ft.share=<code>``). Whoever holds the link sees the snapshot, nothing more: no adapter,
no log (it can quote the training data), no way to cancel or query the run. The answers in it are the ones
the server itself generated for the owner (:func:`record_comparison`), never text sent by a page, so a
shared link cannot put words in a model's mouth::

    from lab.finetune import share
    code = share.publish(job.snapshot(), job.output_dir)
    share.load(code)["losses"][:3]
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from lab import config
from lab.errors import LabError

COMPARISON = "comparison.json"  # in a run's folder: the last before/after answers the owner asked for
# The parts of a job's snapshot a shared link shows (lab.finetune.Job.snapshot); the rest stays private.
PUBLIC = ("status", "step", "total_steps", "losses", "eval_losses", "learning_rates", "tokens", "elapsed_s",
          "method", "method_title", "base_model")  # fmt: skip


class NotShared(LabError):
    """No shared run has this code (never published, or forgotten with the server's cache)."""

    def __init__(self) -> None:
        super().__init__(
            "This link's fine-tune run is not shared on this server (the code is unknown). Ask its owner "
            "for a new link: they press 'Share the results' on their finished run."
        )


def folder() -> Path:
    """Where snapshots are kept: ``<LAB_CACHE_DIR>/shared-runs``."""
    return config.cache_dir() / "shared-runs"


def record_comparison(run_dir: str | Path, prompt: str, base: str, tuned: str) -> None:
    """Keep the answers the server just generated for the run's owner, for a later :func:`publish`."""
    record = {"prompt": prompt, "base": base, "tuned": tuned}
    (Path(run_dir) / COMPARISON).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")


def publish(snapshot: dict[str, Any], run_dir: str | Path) -> str:
    """Write the public part of a finished run and its last comparison; returns the share code.

    Raises:
        LabError: the run has not finished (a shared view is read-only and final).
    """
    if snapshot.get("status") != "done":
        raise LabError(f"Only a finished run can be shared; this one is {snapshot.get('status')}.")
    public = {key: snapshot.get(key) for key in PUBLIC}
    comparison = Path(run_dir) / COMPARISON
    public["comparison"] = (
        json.loads(comparison.read_text(encoding="utf-8")) if comparison.is_file() else None
    )
    code = secrets.token_hex(16)
    folder().mkdir(parents=True, exist_ok=True)
    (folder() / f"{code}.json").write_text(json.dumps(public, ensure_ascii=False), encoding="utf-8")
    return code


def load(code: str) -> dict[str, Any]:
    """The snapshot shared under ``code`` (checked as 32 hex digits by :mod:`lab.links` first)."""
    if len(code) != 32 or any(c not in "0123456789abcdef" for c in code):
        raise NotShared()
    path = folder() / f"{code}.json"
    if not path.is_file():
        raise NotShared()
    return json.loads(path.read_text(encoding="utf-8"))


def describe(public: dict[str, Any]) -> str:
    """One Markdown line on a shared run, saying that it is read-only."""
    losses = public.get("losses") or []
    trend = f", loss {losses[0][1]:.3f} → {losses[-1][1]:.3f}" if losses else ""
    model = str(public.get("base_model") or "").replace("`", "")
    return (
        f"🔗 **A shared run (read-only)**: `{model}`, {public.get('step', 0)} steps{trend} "
        f"({public.get('method_title') or public.get('method')}). Below: its loss curve and the answers "
        "its owner compared. Start your own run to train and compare."
    )
