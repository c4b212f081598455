"""The instructor's side of a classroom: who is here, paused tabs, messages to the class, quotas.

One process serves a class of 30–60 students. The instructors (``LAB_INSTRUCTORS``, logins of ``LAB_AUTH``)
see who is connected and on which tab, pause a heavy tab for everyone, send a message (with a prompt, an
image, or both) to every page, and set each student's allowance of model seconds and fine-tune steps per
session. This module holds that state and its rules; the page (``tabs/instructor.py``) only shows and
changes it, and the model queue (:mod:`lab.scheduler`) and the fine-tune runner ask
:meth:`Classroom.admit` and :meth:`Classroom.admit_finetune` before they take a request. Instructors are
never limited or paused.

Pure Python, no Gradio::

    room = Classroom(instructors={"teacher"}, quotas=Quotas(gpu_seconds=60))
    room.set_paused({"topics"})
    room.admit("user:alice", "topics · fit")  # raises Paused
    room.send("Open the attention tab", prompt="The cat sat on the mat", target="attention text")
    room.send("What is this?", image="car.png", image_targets=["BLIP-2: chat image"])  # a copy is sent
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.images import BadImage, open_image
from lab.scheduler import SCHEDULER
from lab.sessions import SESSION, USER

ROSTER_TTL_S = 30.0  # a page not heard from for this long has left (its timer ticks every few seconds)
_SALT = secrets.token_bytes(16)  # anonymous labels cannot be turned back into session hashes


class NotInstructor(LabError, PermissionError):
    """A request for the instructor panel from someone who is not an instructor."""

    def __init__(self) -> None:
        super().__init__("Only the class's instructors (LAB_INSTRUCTORS) can use the instructor panel.")


class Paused(LabError):
    """A model request on a tab the instructor paused."""

    def __init__(self, tab: str) -> None:
        super().__init__(f"The instructor paused the {tab} tab for now; it comes back when they resume it.")


class OverQuota(LabError):
    """A request past the student's allowance for this session."""


def tab_of(kind: str) -> str:
    """The tab a model queue kind belongs to: ``"attention · predict"`` → ``"attention"``."""
    return kind.split(" · ", 1)[0]


def public_name(owner: str, viewer: str | None = None) -> str:
    """How a student is shown to others: their login name, ``you`` for the viewer's own requests, or a
    short anonymous label for a session without login (never its session hash, which would let another
    student act as that session)."""
    if owner == viewer:
        return "you"
    if owner.startswith(USER):
        return owner.removeprefix(USER)
    if owner.startswith(SESSION):
        return "guest " + hashlib.blake2b(owner.encode(), key=_SALT, digest_size=2).hexdigest()
    return owner


@dataclass(frozen=True)
class Presence:
    """One open page: its owner, the tab it shows, since when (``time.time()``) and when last heard."""

    session: str
    owner: str
    tab: str
    since: float
    seen: float


class Roster:
    """Who is connected, page by page, and on which tab. Pages report in; silent ones drop out."""

    def __init__(self, ttl_s: float = ROSTER_TTL_S, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._pages: dict[str, Presence] = {}

    def seen(self, session: str, owner: str, tab: str | None = None) -> None:
        """Page ``session`` of ``owner`` is alive; ``tab``: it switched to that tab."""
        now = self._clock()
        with self._lock:
            old = self._pages.get(session)
            if old is None or (tab is not None and tab != old.tab):
                shown = tab if tab is not None else (old.tab if old else "")
                self._pages[session] = Presence(session, owner, shown, now, now)
            else:
                self._pages[session] = Presence(session, owner, old.tab, old.since, now)

    def left(self, session: str) -> None:
        """Page ``session`` closed."""
        with self._lock:
            self._pages.pop(session, None)

    def pages(self) -> list[Presence]:
        """The open pages (those heard from within ``ttl_s``), by owner."""
        now = self._clock()
        with self._lock:
            for session in [s for s, p in self._pages.items() if now - p.seen > self.ttl_s]:
                del self._pages[session]
            return sorted(self._pages.values(), key=lambda p: (p.owner, p.since))


class Pauses:
    """Tabs paused for everyone (by the tab names of :func:`tab_of`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paused: set[str] = set()

    def set(self, tabs: Iterable[str]) -> None:
        """Pause exactly ``tabs``; every other tab runs."""
        with self._lock:
            self._paused = set(tabs)

    def pause(self, tab: str) -> None:
        with self._lock:
            self._paused.add(tab)

    def resume(self, tab: str) -> None:
        with self._lock:
            self._paused.discard(tab)

    def paused(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._paused)


@dataclass(frozen=True)
class Message:
    """A message to the class: its text, an optional prompt for the ``target`` box, an optional image for
    the ``image_targets`` boxes (the class's copy, on the server), and its number."""

    version: int
    text: str
    prompt: str = ""
    target: str = ""
    sent: float = 0.0
    image: str = ""
    image_targets: tuple[str, ...] = ()


IMAGE_MAX_BYTES = 20 * 2**20  # the lab's cap on one uploaded file (LAB_MAX_FILE_SIZE's default)


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


class Broadcast:
    """The latest message to the class; each page shows a message once, when its version is new to it.

    An image sent with a message is checked as every upload is (size, then opened by :mod:`lab.images`) and
    copied into ``folder``: the class's copy, which every page reads and which outlives the sender's upload.
    A copy is deleted once newer images have replaced it in every box it was sent to.
    """

    def __init__(self, folder: str | Path | None = None, max_image_bytes: int = IMAGE_MAX_BYTES) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.gettempdir()) / "llm-lab-class"
        self.max_image_bytes = max_image_bytes
        self._lock = threading.Lock()
        self._latest = Message(0, "")
        self._boxes: dict[str, Path] = {}  # each image box → the class's copy last sent to it

    def send(
        self,
        text: str,
        prompt: str = "",
        target: str = "",
        image: str | Path | None = None,
        image_targets: Iterable[str] = (),
    ) -> Message:
        """Replace the class's message (a page that missed the previous one sees only this one).

        Raises:
            LabError: nothing to send, or a prompt or an image without the boxes it goes into.
            BadImage: the image is over ``max_image_bytes``, not an image, or too large to open.
        """
        text, prompt = text.strip(), prompt.strip()
        targets = tuple(image_targets) if image else ()
        if not text and not prompt and not image:
            raise LabError("Write a message or a prompt, or choose an image, to send to the class.")
        if prompt and not target:
            raise LabError("Choose the box the prompt goes into.")
        if image and not targets:
            raise LabError("Choose the boxes the image goes into.")
        copy = self._keep(Path(image)) if image else None
        with self._lock:
            held = set(self._boxes.values())
            self._boxes.update(dict.fromkeys(targets, copy) if copy is not None else {})
            replaced = held - set(self._boxes.values())
            self._latest = Message(
                self._latest.version + 1,
                text,
                prompt,
                target if prompt else "",
                time.time(),
                str(copy or ""),
                targets,
            )
            latest = self._latest
        for old in replaced:
            shutil.rmtree(old.parent, ignore_errors=True)
        return latest

    def latest(self) -> Message:
        with self._lock:
            return self._latest

    def drop_image(self) -> None:
        """Delete the class's images (a new class starts without them); the latest message loses its own."""
        with self._lock:
            held, self._boxes = set(self._boxes.values()), {}
            self._latest = dataclasses.replace(self._latest, image="", image_targets=())
        for old in held:
            shutil.rmtree(old.parent, ignore_errors=True)

    def _keep(self, image: Path) -> Path:
        """The class's copy of ``image``, checked first as an upload is."""
        name = image.name or "the image"
        try:
            size = image.stat().st_size
        except OSError as error:
            raise BadImage(f"{name} could not be read: {error.strerror}.") from None
        if size > self.max_image_bytes:
            raise BadImage(
                f"{name} is {_size(size)}; an image sent to the class may be at most "
                f"{_size(self.max_image_bytes)} (LAB_MAX_FILE_SIZE)."
            )
        open_image(image)  # not an image, damaged, or over LAB_MAX_IMAGE_PIXELS: BadImage says which
        folder = self.folder / secrets.token_hex(16)
        folder.mkdir(parents=True)
        copy = folder / (re.sub(r"[^\w.-]", "_", name).lstrip(".")[-100:] or "image")
        shutil.copyfile(image, copy)
        return copy


class Quotas:
    """Each student's allowance per session: model seconds and fine-tune steps (0: unlimited).

    Changed by the instructor at run time; read on every request.
    """

    def __init__(self, gpu_seconds: float = 0.0, finetune_steps: int = 0) -> None:
        self._lock = threading.Lock()
        self.gpu_seconds, self.finetune_steps = 0.0, 0
        self.set(gpu_seconds, finetune_steps)

    def set(self, gpu_seconds: float, finetune_steps: int) -> None:
        if gpu_seconds < 0 or finetune_steps < 0:
            raise LabError("Quotas are 0 (unlimited) or more.")
        with self._lock:
            self.gpu_seconds, self.finetune_steps = float(gpu_seconds), int(finetune_steps)

    def check_gpu(self, used_s: float) -> None:
        """Raise :class:`OverQuota` once a student has used their model seconds."""
        quota = self.gpu_seconds
        if quota and used_s >= quota:
            raise OverQuota(
                f"You have used your quota of {quota:g} model seconds for this session "
                f"({used_s:.1f} s used, 0 s left). Ask your instructor for more."
            )

    def check_steps(self, requested: int, used: int) -> None:
        """Raise :class:`OverQuota` when a run of ``requested`` steps would pass the student's steps."""
        quota = self.finetune_steps
        if quota and requested + used > quota:
            left = max(0, quota - used)
            raise OverQuota(
                f"This run trains {requested} steps, but your quota is {quota} fine-tune steps per session "
                f"and you have used {used}: {left} left. Set Max steps to {left} or fewer"
                + (", or ask your instructor for more." if left else "; ask your instructor for more.")
            )


class Classroom:
    """The class's state and rules (see the module docstring). Thread-safe."""

    def __init__(
        self,
        instructors: Iterable[str] = (),
        quotas: Quotas | None = None,
        gpu_usage: Callable[[str], float] = lambda student: 0.0,
    ) -> None:
        self.instructors = frozenset(instructors)
        self.titles: dict[str, str] = {}  # tab name → the name the page shows
        self.kinds: dict[str, str] = {}  # queue kinds without a tab in their name → their tab
        self.quotas = quotas or Quotas()
        self.gpu_usage = gpu_usage  # a student's model seconds so far (the model queue counts them)
        self.roster = Roster()
        self.pauses = Pauses()
        self.broadcast = Broadcast()
        self._lock = threading.Lock()
        self._version = 0

    def configure(
        self,
        instructors: Iterable[str],
        gpu_seconds: float,
        finetune_steps: int,
        titles: dict[str, str] | None = None,
        kinds: dict[str, str] | None = None,
        image_folder: str | Path | None = None,
        max_image_bytes: int | None = None,
    ) -> None:
        """Start a class: these instructors and quotas, no tab paused, no image (the app does this as it
        builds); ``titles`` names the tabs in messages (``{"clip_search": "CLIP search"}``), ``kinds`` gives
        the tab of queue kinds that do not name it (``{"next_token": "attention"}``); images sent to the
        class are kept in ``image_folder``, each at most ``max_image_bytes``."""
        self.instructors = frozenset(instructors)
        self.titles = dict(titles or {})
        self.kinds = dict(kinds or {})
        self.quotas.set(gpu_seconds, finetune_steps)
        self.broadcast.drop_image()
        if image_folder is not None:
            self.broadcast.folder = Path(image_folder)
        self.broadcast.max_image_bytes = max_image_bytes or IMAGE_MAX_BYTES
        self.set_paused(())

    @property
    def version(self) -> int:
        """Grows with every change the students' pages show (a pause, a resume, a message)."""
        with self._lock:
            return self._version

    def changed(self) -> None:
        with self._lock:
            self._version += 1

    def is_instructor(self, owner: str | None) -> bool:
        """True for the owner id (``user:<name>``) of an instructor's login."""
        return bool(owner) and owner.startswith(USER) and owner.removeprefix(USER) in self.instructors

    def require_instructor(self, owner: str | None) -> None:
        if not self.is_instructor(owner):
            raise NotInstructor()

    def set_paused(self, tabs: Iterable[str]) -> None:
        self.pauses.set(tabs)
        self.changed()

    def send(
        self,
        text: str,
        prompt: str = "",
        target: str = "",
        image: str | Path | None = None,
        image_targets: Iterable[str] = (),
    ) -> Message:
        """Send a message to the class (:meth:`Broadcast.send`); every page shows it within a tick."""
        message = self.broadcast.send(text, prompt, target, image, image_targets)
        self.changed()
        return message

    def admit(self, student: str, kind: str) -> None:
        """May ``student`` queue a model request of ``kind``? (The model queue's ``admit`` hook.)"""
        if self.is_instructor(student):
            return
        tab = self.kinds.get(kind) or tab_of(kind)
        if tab in self.pauses.paused():
            raise Paused(self.titles.get(tab, tab))
        self.quotas.check_gpu(self.gpu_usage(student))

    def admit_finetune(self, student: str | None, requested: int, used: int) -> None:
        """May ``student`` start a run of ``requested`` steps, having trained (or queued) ``used``?
        (The fine-tune runner's ``admit`` hook.)"""
        if student is None or self.is_instructor(student):
            return  # a run started from Python is the instructor's own
        if "finetune" in self.pauses.paused():
            raise Paused(self.titles.get("finetune", "finetune"))
        self.quotas.check_steps(requested, used)


# The process's class: the app configures it from its settings and hooks it into the model queue and the
# fine-tune runner.
CLASSROOM = Classroom(gpu_usage=SCHEDULER.usage)
