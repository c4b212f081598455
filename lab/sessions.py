"""Who owns what on a shared server: owners of requests, private folders, uploads' owners, the login
throttle, upload budgets.

A classroom serves 30–60 students from one process, so every per-student thing (a fine-tune run, a gallery
of uploaded images) records its owner and answers "not yours" to anyone else. The owner of a request is
the logged-in user when the lab asks for logins (``LAB_AUTH``, required by ``LAB_CLASSROOM``), else the
browser tab's session (Gradio's session hash): without logins a reload is a new owner.

Pure Python: the app's web layer (``tabs/access.py``) feeds these objects; a notebook can use them too::

    throttle = LoginThrottle()
    for _ in range(5):
        throttle.failed("10.0.0.7")
    throttle.wait_s("10.0.0.7")  # about 30.0: this address is refused for half a minute
"""

from __future__ import annotations

import math
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.errors import LabError

USER = "user:"
SESSION = "session:"


class NotYours(LabError, PermissionError):
    """Something (a run, a file) belongs to another student; its contents are not shown."""

    def __init__(self, what: str = "This fine-tune run") -> None:
        super().__init__(
            f"{what} belongs to another student: you can only see, cancel and compare your own. "
            "Start your own run, or check the id you typed."
        )


class TooMuch(LabError):
    """A request over a shared limit; ``status`` is its HTTP code (413 too large, 429 too often)."""

    def __init__(self, message: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def owner_of(request: Any) -> str:
    """The owner id of a request: ``"user:<name>"`` when logged in, else ``"session:<hash>"``.

    ``request`` is anything with ``username`` and ``session_hash`` attributes (Gradio's ``gr.Request``);
    ``None`` (a call from Python, no web request) is the local owner, ``"local"``.
    """
    if request is None:
        return "local"
    username = getattr(request, "username", None)
    if username:
        return f"{USER}{username}"
    session = getattr(request, "session_hash", None)
    return f"{SESSION}{session}" if session else "local"


def is_login(owner: str | None) -> bool:
    """True for the owner id of a logged-in user (whose files a login can be checked against)."""
    return bool(owner) and owner.startswith(USER)


def check_owner(owner: str | None, requester: str | None, what: str = "This fine-tune run") -> None:
    """Raise :class:`NotYours` unless ``requester`` may act on a thing owned by ``owner``.

    A thing with no owner (started from Python) and a requester of ``None`` (Python, not a web request)
    are not checked: ownership separates web users from each other, not the instructor from the lab.
    """
    if requester is None or owner is None:
        return
    if owner != requester:
        raise NotYours(what)


class LoginThrottle:
    """Refuse logins from an address after ``failures`` wrong passwords within ``window_s`` seconds, for
    ``block_s`` seconds. Safe to use from several threads."""

    def __init__(
        self,
        failures: int = 5,
        window_s: float = 60.0,
        block_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures, self.window_s, self.block_s = failures, window_s, block_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failed: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def wait_s(self, address: str) -> float:
        """Seconds this address must still wait before trying again (0: it may try now)."""
        with self._lock:
            left = self._blocked_until.get(address, 0.0) - self._clock()
            if left <= 0:
                self._blocked_until.pop(address, None)
                return 0.0
            return left

    def failed(self, address: str) -> None:
        """Count a wrong password; the ``failures``-th within the window blocks the address."""
        now = self._clock()
        with self._lock:
            recent = self._failed.setdefault(address, deque())
            recent.append(now)
            while recent and now - recent[0] > self.window_s:
                recent.popleft()
            if len(recent) >= self.failures:
                self._blocked_until[address] = now + self.block_s
                recent.clear()
            self._forget_old(now)

    def succeeded(self, address: str) -> None:
        """A right password clears the address's count of failures."""
        with self._lock:
            self._failed.pop(address, None)

    def message(self, wait_s: float) -> str:
        return (
            f"Too many wrong passwords from this computer: {self.failures} within a minute. "
            f"Wait {max(1, round(wait_s))} s, then try again (ask your instructor if you forgot yours)."
        )

    def _forget_old(self, now: float) -> None:
        if len(self._failed) > 10_000:  # a flood of addresses must not grow this without bound
            for key in [k for k, v in self._failed.items() if not v or now - v[-1] > self.window_s]:
                del self._failed[key]


class UploadBudget:
    """How many bytes each student may upload per ``window_s`` (an hour), counted over a sliding window.

    Safe to use from several threads.
    """

    def __init__(
        self, max_bytes: int, window_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes, self.window_s = max_bytes, window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._spent: dict[str, deque[tuple[float, int]]] = {}

    def used(self, student: str) -> int:
        """Bytes ``student`` uploaded within the window."""
        with self._lock:
            return sum(size for _, size in self._recent(student, self._clock()))

    def check(self, student: str, size: int) -> None:
        """Raise :class:`TooMuch` (429) when ``size`` more bytes would pass the student's budget."""
        now = self._clock()
        with self._lock:
            recent = self._recent(student, now)
            used = sum(s for _, s in recent)
            if used + size <= self.max_bytes:
                return
            # The budget frees up as the oldest uploads leave the window.
            retry = self.window_s - (now - recent[0][0]) if recent else self.window_s
        raise TooMuch(
            f"You have uploaded {used / 2**20:.0f} MB in the last hour; each student may upload "
            f"{self.max_bytes / 2**20:.0f} MB per hour, and this upload is {size / 2**20:.1f} MB. "
            f"Try again in {max(1, round(retry / 60))} min, or upload less.",
            429,
            retry,
        )

    def charge(self, student: str, size: int) -> None:
        """Count ``size`` uploaded bytes against ``student``."""
        with self._lock:
            self._recent(student, self._clock()).append((self._clock(), size))

    def _recent(self, student: str, now: float) -> deque[tuple[float, int]]:
        recent = self._spent.setdefault(student, deque())
        while recent and now - recent[0][0] > self.window_s:
            recent.popleft()
        return recent


class PrivateFolders:
    """Folders of per-student files under one ``root``, each with a random name and an owner.

    The web layer serves a file under ``root`` only to its folder's owner (:meth:`may_read`); the random
    name (128 bits) keeps the files of sessions without a login out of reach of anyone who was not given
    the address.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}
        self._swept_at = -math.inf

    def create(self, owner: str) -> Path:
        """A new empty folder owned by ``owner``."""
        name = secrets.token_hex(16)
        folder = self.root / name
        folder.mkdir(parents=True, mode=0o700)
        with self._lock:
            self._owners[name] = owner
        return folder

    def owner(self, path: str | Path) -> str | None:
        """The owner of the folder that holds ``path`` (None: not under the root, or no such folder)."""
        name = self._folder_name(path)
        if name is None:
            return None
        with self._lock:
            return self._owners.get(name)

    def holds(self, path: str | Path) -> bool:
        """True when ``path`` lies under the root (whether or not its folder still exists)."""
        return self._folder_name(path) is not None

    def may_read(self, path: str | Path, user: str | None) -> bool:
        """May the logged-in ``user`` (a name, or None without logins) read ``path`` under the root?

        Folders of logged-in owners are read by that login only; folders of sessions without a login are
        read by whoever has the address (it holds 128 random bits); unknown folders by nobody.
        """
        owner = self.owner(path)
        if owner is None:
            return False
        if is_login(owner):
            return user is not None and owner == f"{USER}{user}"
        return True

    def sweep(self, older_than_s: float, every_s: float = 0.0) -> None:
        """Remove the folders not changed for ``older_than_s`` seconds (those of an earlier server too);
        ``every_s``: do nothing if the last sweep was more recent than that (a sweep reads the whole root)."""
        now = time.monotonic()
        with self._lock:
            if now - self._swept_at < every_s:
                return
            self._swept_at = now
        cutoff = time.time() - older_than_s
        try:
            folders = list(self.root.iterdir())
        except FileNotFoundError:
            return
        for folder in folders:
            try:
                old = folder.stat().st_mtime < cutoff
            except FileNotFoundError:  # another request removed it first
                continue
            if old:
                self.delete(folder)

    def delete(self, folder: str | Path | None) -> None:
        """Remove a folder and forget its owner (a session's end, or "remove my images")."""
        if folder is None:
            return
        name = self._folder_name(folder)
        if name is None:
            return
        shutil.rmtree(self.root / name, ignore_errors=True)
        with self._lock:
            self._owners.pop(name, None)

    def _folder_name(self, path: str | Path) -> str | None:
        try:
            relative = Path(path).resolve().relative_to(self.root)
        except (ValueError, OSError):
            return None
        return relative.parts[0] if relative.parts else None


class UploadOwners:
    """Which logins uploaded each file, so that an upload is served to those logins only.

    Gradio names an uploaded file by its content, so two students who upload the same bytes share one path;
    both own it (each has the bytes anyway). Files nobody uploaded (the lab's own, Gradio's cache) are not
    recorded here. Safe to use from several threads.
    """

    def __init__(self, max_files: int = 100_000) -> None:
        self.max_files = max_files
        self._lock = threading.Lock()
        self._owners: dict[str, set[str]] = {}

    def add(self, path: str | Path, user: str) -> None:
        """``user`` (a login name) uploaded the file at ``path``."""
        key = _key(path)
        with self._lock:
            if key not in self._owners and len(self._owners) >= self.max_files:
                self._make_room()
            self._owners.setdefault(key, set()).add(user)

    def owners(self, path: str | Path) -> frozenset[str] | None:
        """The logins that uploaded ``path``, or None when it is not an upload of a login."""
        with self._lock:
            found = self._owners.get(_key(path))
            return frozenset(found) if found is not None else None

    def may_read(self, path: str | Path, user: str | None) -> bool:
        """True unless ``path`` was uploaded by logins other than ``user`` (None: no login)."""
        owners = self.owners(path)
        return owners is None or user in owners

    def forget(self, path: str | Path) -> None:
        """The file was deleted."""
        with self._lock:
            self._owners.pop(_key(path), None)

    def _make_room(self) -> None:
        """Forget deleted files, then the oldest records down to nine tenths of ``max_files`` (a flood of
        uploads must not grow this without bound; a forgotten file falls back to Gradio's own rules)."""
        for key in [k for k in self._owners if not Path(k).exists()]:
            del self._owners[key]
        for key in list(self._owners)[: max(0, len(self._owners) - self.max_files * 9 // 10)]:
            del self._owners[key]


def _key(path: str | Path) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(path)
