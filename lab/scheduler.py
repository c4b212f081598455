"""The model queue: one model call at a time, shared fairly between students, batched where it pays.

A classroom shares one GPU (or two CPU cores) between 30–60 students. A first-come-first-served queue lets
the student who clicks fastest hold it, and one slow request stalls everyone. The :class:`Scheduler` is the
lab's one queue for model work, with four rules:

- **Turns go round the students** (round robin): a student with three requests waiting gets one turn per
  round, like everyone else, so a newcomer waits for at most one turn per other student.
- **One request waiting per student and kind**: a second click on the same button while the first still
  waits replaces it (the first is answered :class:`Replaced`); a click while one of the student's requests
  runs waits behind it.
- **Batches across students**: requests that share a batch key (the same feature on the same model) and
  wait at the same time run as one batch, in one forward pass, when the first of them gets its turn.
- **Quotas and pauses**: each student's model seconds are counted (:meth:`Scheduler.usage`), and an
  optional ``admit`` check (the classroom's quotas, an instructor's pause) can refuse a request before it
  waits.

Every waiter can learn its :class:`Place` (how many turns are ahead, and an estimate from the recent
service times of each kind), which the page shows while it waits. Pure Python, no Gradio::

    scheduler = Scheduler()
    with scheduler.turn("alice", "attention") as ticket:
        ...  # alice's model call; nobody else's runs meanwhile
    scheduler.run_batched("bob", "next_token", key=model_id, item=ids, batch_fn=forward_many)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lab.errors import LabError

POLL_S = 0.02  # how often a waiter looks at its ticket (async waiters) or re-checks its place
ETA_WEIGHT = 0.3  # weight of the newest service time in each kind's moving average
FIRST_GUESS_S = 1.0  # the service time assumed for a kind never served yet
BATCH_HISTORY = 1000  # batch sizes remembered by :meth:`Scheduler.batch_sizes`


class Replaced(LabError):
    """A waiting request superseded by the same student's newer request of the same kind."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"Your earlier {kind} request was replaced by your newer one (one request per student waits "
            "in the model queue at a time)."
        )


@dataclass(frozen=True)
class Place:
    """Where a waiting request stands: ``ahead`` turns before its own, about ``eta_s`` seconds."""

    ahead: int
    eta_s: float

    @property
    def shown(self) -> tuple[int, int]:
        """What a person sees of it (turns, whole seconds): a waiter reports its place when this changes."""
        return self.ahead, round(self.eta_s)

    def describe(self) -> str:
        if self.ahead == 0:
            return "next in the model queue"
        turns = "turn" if self.ahead == 1 else "turns"
        return f"waiting in the model queue: {self.ahead} {turns} ahead, about {self.eta_s:.0f} s"


@dataclass(eq=False)
class Ticket:
    """One request in the queue; ``state`` goes waiting → running (or batched into another) → done."""

    student: str
    kind: str
    key: Hashable | None = None  # requests with the same key may share a batch; None: never batched
    item: Any = None
    joined: float = field(default_factory=time.monotonic)
    started: float | None = None
    state: str = "waiting"  # waiting | running | batched | done
    batch: list[Ticket] = field(default_factory=list)  # the members a leader runs for (itself first)
    result: Any = None
    error: BaseException | None = None
    wake: threading.Event = field(default_factory=threading.Event)

    @property
    def granted(self) -> bool:
        return self.wake.is_set()


@dataclass(frozen=True)
class Row:
    """One line of :meth:`Scheduler.snapshot`, for the System and instructor panels."""

    student: str
    kind: str
    state: str
    seconds: float  # waiting so far, or running so far
    ahead: int | None = None


class Scheduler:
    """The process's model queue (see the module docstring). Thread-safe; waits are sync or async."""

    def __init__(self, *, max_batch: int = 16, admit: Callable[[str, str], None] | None = None) -> None:
        self.max_batch = max_batch
        self.admit = admit  # raises a LabError to refuse (student, kind) before it waits
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[Ticket]] = {}  # per student, in the order they clicked
        self._order: deque[str] = deque()  # students with something waiting, next turn first
        self._running: Ticket | None = None
        self._service_s: dict[str, float] = {}  # moving average of each kind's service time
        self._usage_s: dict[str, float] = {}  # model seconds used per student
        self._batch_sizes: deque[int] = deque(maxlen=BATCH_HISTORY)  # of the batches run, newest last

    # ---------------------------------------------------------------- joining and leaving the queue

    def join(self, student: str, kind: str, *, key: Hashable | None = None, item: Any = None) -> Ticket:
        """Queue a request; the returned ticket is granted (``ticket.wake``) when its turn comes."""
        if self.admit is not None:
            self.admit(student, kind)
        ticket = Ticket(student, kind, key, item)
        with self._lock:
            queue = self._waiting.setdefault(student, deque())
            for old in [t for t in queue if t.kind == kind]:
                queue.remove(old)
                self._finish(old, error=Replaced(kind))
            queue.append(ticket)
            if student not in self._order:
                self._order.append(student)
            self._grant()
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """Give up a ticket: a waiting one leaves the queue; a running one frees the model for the next."""
        with self._lock:
            if ticket.state == "waiting":
                self._remove(ticket)
                self._finish(ticket)
            elif ticket.state == "running" and self._running is ticket:
                elapsed = time.monotonic() - (ticket.started or time.monotonic())
                self._learn(ticket.kind, elapsed)
                share = elapsed / len(ticket.batch or [ticket])  # a batch's members split its time
                self._usage_s[ticket.student] = self._usage(ticket.student) + share
                self._running = None
                ticket.state = "done"
            self._grant()

    # ---------------------------------------------------------------- waiting for a turn

    def wait(self, ticket: Ticket, on_wait: Callable[[Place], None] | None = None) -> None:
        """Block until ``ticket`` runs (or was answered); ``on_wait`` hears each new place."""
        last: Place | None = None
        while not ticket.wake.wait(0.5 if on_wait else None):
            place = self.place(ticket)
            if on_wait and place is not None and (last is None or place.shown != last.shown):
                on_wait(place)
                last = place
        self._raise_if_failed(ticket)

    async def wait_async(self, ticket: Ticket, on_wait: Callable[[Place], None] | None = None) -> None:
        """:meth:`wait` for the event loop; cancelling the awaiting task takes the ticket out of the queue."""
        last: Place | None = None
        try:
            while not ticket.granted:
                place = self.place(ticket)
                if on_wait and place is not None and (last is None or place.shown != last.shown):
                    on_wait(place)
                    last = place
                await asyncio.sleep(POLL_S)
        except asyncio.CancelledError:
            self.leave(ticket)
            raise
        self._raise_if_failed(ticket)

    @contextlib.contextmanager
    def turn(
        self, student: str, kind: str, on_wait: Callable[[Place], None] | None = None
    ) -> Iterator[Ticket]:
        """Hold the model for ``student`` while the ``with`` block runs (waiting for the turn first)."""
        ticket = self.join(student, kind)
        try:
            self.wait(ticket, on_wait)
            yield ticket
        finally:
            self.leave(ticket)

    @contextlib.asynccontextmanager
    async def turn_async(
        self, student: str, kind: str, on_wait: Callable[[Place], None] | None = None
    ) -> AsyncIterator[Ticket]:
        """:meth:`turn` for the event loop (the page's events wait here without holding a thread)."""
        ticket = self.join(student, kind)
        try:
            await self.wait_async(ticket, on_wait)
            yield ticket
        finally:
            self.leave(ticket)

    def run_batched(
        self,
        student: str,
        kind: str,
        *,
        key: Hashable,
        item: Any,
        batch_fn: Callable[[list[Any]], list[Any]],
        on_wait: Callable[[Place], None] | None = None,
    ) -> Any:
        """Run ``item`` in a batch with other students' waiting items of the same ``key``.

        ``batch_fn`` gets the items (at most ``max_batch``) and returns one result per item, in order; a
        result that is an exception is raised to that item's student only. Whoever's turn comes first
        runs the batch for all of its members, in its own thread.
        """
        ticket = self.join(student, kind, key=key, item=item)
        try:
            self.wait(ticket, on_wait)
            if ticket.state == "running":  # this thread leads the batch
                self._run_batch(ticket, batch_fn)
            else:  # another student's thread runs it
                ticket.wake.clear()
                while ticket.state != "done":
                    ticket.wake.wait(POLL_S * 10)
        finally:
            self.leave(ticket)
        self._raise_if_failed(ticket)
        return ticket.result

    # ---------------------------------------------------------------- what the panels show

    def place(self, ticket: Ticket) -> Place | None:
        """The waiting ticket's place, or ``None`` once it is no longer waiting."""
        with self._lock:
            if ticket.state != "waiting":
                return None
            for ahead, (queued, eta) in enumerate(self._turn_order()):
                if queued is ticket:
                    return Place(ahead, eta)
        return None

    def snapshot(self) -> list[Row]:
        """Everything queued: what runs now, then what waits, in the order turns will be given."""
        now = time.monotonic()
        with self._lock:
            rows = []
            if self._running is not None:
                for t in self._running.batch or [self._running]:
                    rows.append(Row(t.student, t.kind, "running", now - (t.started or now)))
            for ahead, (t, _) in enumerate(self._turn_order()):
                rows.append(Row(t.student, t.kind, "waiting", now - t.joined, ahead))
        return rows

    def service_times(self) -> dict[str, float]:
        """Each kind's recent service time in seconds (the moving average behind every estimate)."""
        with self._lock:
            return dict(self._service_s)

    def batch_sizes(self) -> list[int]:
        """How many requests each recent :meth:`run_batched` batch served, oldest first (the panels show
        whether batching pays; the tests check that concurrent requests did share a batch)."""
        with self._lock:
            return list(self._batch_sizes)

    def usage(self, student: str) -> float:
        """Model seconds ``student`` has used (a batch's time is shared between its members)."""
        with self._lock:
            return self._usage(student)

    def forget(self, student: str) -> None:
        """Drop a student's waiting requests and usage (their session ended)."""
        with self._lock:
            for ticket in list(self._waiting.get(student, ())):
                self._remove(ticket)
                self._finish(ticket)
            self._usage_s.pop(student, None)
            self._grant()

    # ---------------------------------------------------------------- the rules, under the lock

    def _turn_order(self) -> Iterator[tuple[Ticket, float]]:
        """Waiting tickets in the order they will run (one per student per round), with their ETA."""
        now = time.monotonic()
        eta = 0.0
        if self._running is not None:
            expected = self._service_s.get(self._running.kind, FIRST_GUESS_S)
            eta = max(0.0, expected - (now - (self._running.started or now)))
        queues = {s: list(self._waiting.get(s, ())) for s in self._order}
        rounds = max((len(q) for q in queues.values()), default=0)
        for depth in range(rounds):
            for student in self._order:
                if depth < len(queues[student]):
                    ticket = queues[student][depth]
                    yield ticket, eta
                    eta += self._service_s.get(ticket.kind, FIRST_GUESS_S)

    def _grant(self) -> None:
        """Give the model to the next student in turn, with batch mates, if nobody holds it."""
        if self._running is not None or not self._order:
            return
        student = self._order.popleft()
        leader = self._waiting[student].popleft()
        if self._waiting[student]:
            self._order.append(student)  # more waiting: back of the round
        else:
            del self._waiting[student]
        leader.batch = [leader]
        if leader.key is not None:
            for other in list(self._order):
                if len(leader.batch) >= self.max_batch:
                    break
                mate = next((t for t in self._waiting[other] if t.key == leader.key), None)
                if mate is not None:
                    self._remove(mate)
                    mate.state = "batched"
                    leader.batch.append(mate)
        now = time.monotonic()
        for member in leader.batch:
            member.started = now
            member.wake.set()
        leader.state = "running"
        self._running = leader

    def _run_batch(self, leader: Ticket, batch_fn: Callable[[list[Any]], list[Any]]) -> None:
        members = leader.batch
        try:
            results = batch_fn([m.item for m in members])
            if len(results) != len(members):
                raise RuntimeError(f"batch_fn returned {len(results)} results for {len(members)} items")
        except BaseException as error:  # the whole batch failed: every member hears why
            results = [error] * len(members)
        with self._lock:
            self._batch_sizes.append(len(members))
            share = (time.monotonic() - (leader.started or time.monotonic())) / len(members)
            for member, result in zip(members[1:], results[1:], strict=True):
                self._usage_s[member.student] = self._usage(member.student) + share
                if isinstance(result, BaseException):
                    self._finish(member, error=result)
                else:
                    self._finish(member, result=result)
        if isinstance(results[0], BaseException):
            leader.error = results[0]
        else:
            leader.result = results[0]

    def _usage(self, student: str) -> float:
        return self._usage_s.get(student, 0.0)

    def _learn(self, kind: str, seconds: float) -> None:
        """Fold one service time into ``kind``'s moving average (the basis of every ETA)."""
        average = self._service_s.get(kind)
        if average is not None:
            seconds = (1 - ETA_WEIGHT) * average + ETA_WEIGHT * seconds
        self._service_s[kind] = seconds

    def _remove(self, ticket: Ticket) -> None:
        queue = self._waiting.get(ticket.student)
        if queue is not None and ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._waiting[ticket.student]
                self._order.remove(ticket.student)

    @staticmethod
    def _finish(ticket: Ticket, *, result: Any = None, error: BaseException | None = None) -> None:
        ticket.result, ticket.error, ticket.state = result, error, "done"
        ticket.wake.set()

    @staticmethod
    def _raise_if_failed(ticket: Ticket) -> None:
        if ticket.error is not None:
            raise ticket.error


# The process's one model queue: every model event of the page and the API waits here.
SCHEDULER = Scheduler()
