"""The model queue (lab.scheduler): turns round the students, replacement, batches, places, usage.

Pure Python with real threads and an event loop; the "model" is a function that records who ran when.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lab.errors import LabError
from lab.scheduler import Place, Replaced, Scheduler
from tests.helpers import in_own_loop


def hold(scheduler: Scheduler, student: str = "holder", kind: str = "hold") -> threading.Event:
    """Occupy the model until the returned event is set (so that others queue up behind)."""
    release, started = threading.Event(), threading.Event()

    def run() -> None:
        with scheduler.turn(student, kind):
            started.set()
            release.wait(10)

    threading.Thread(target=run, daemon=True).start()
    assert started.wait(5)
    return release


def queue_up(scheduler: Scheduler, requests: list[tuple[str, str]], ran: list[str]) -> list[threading.Thread]:
    """Start one thread per (student, kind) request, in this order, each waiting for its turn."""
    threads = []
    for student, kind in requests:

        def run(student: str = student, kind: str = kind) -> None:
            try:
                with scheduler.turn(student, kind):
                    ran.append(f"{student}:{kind}")
            except Replaced:
                ran.append(f"{student}:{kind} replaced")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        wait_until(lambda n=len(threads): len(scheduler.snapshot()) >= n + 1 or len(ran) > 0)
    return threads


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_turns_go_round_the_students_not_first_come_first_served() -> None:
    scheduler = Scheduler()
    release = hold(scheduler)
    ran: list[str] = []
    # Alice clicks three different things before Bob and Carol click once each.
    requests = [("alice", "a1"), ("alice", "a2"), ("alice", "a3"), ("bob", "b1"), ("carol", "c1")]
    threads = queue_up(scheduler, requests, ran)
    release.set()
    for thread in threads:
        thread.join(5)
    assert ran == ["alice:a1", "bob:b1", "carol:c1", "alice:a2", "alice:a3"]


def test_a_second_click_replaces_the_waiting_one_and_says_so() -> None:
    scheduler = Scheduler()
    release = hold(scheduler)
    ran: list[str] = []
    threads = queue_up(scheduler, [("alice", "predict")], ran)
    threads += queue_up(scheduler, [("alice", "predict")], ran)
    wait_until(lambda: ran == ["alice:predict replaced"])
    release.set()
    for thread in threads:
        thread.join(5)
    assert ran == ["alice:predict replaced", "alice:predict"]
    assert "replaced by your newer one" in str(Replaced("predict"))


def test_a_click_while_ones_own_request_runs_waits_behind_it() -> None:
    scheduler = Scheduler()
    release = hold(scheduler, "alice", "predict")
    ran: list[str] = []
    threads = queue_up(scheduler, [("alice", "predict")], ran)
    states = [(r.student, r.state) for r in scheduler.snapshot()]
    assert states == [("alice", "running"), ("alice", "waiting")]
    release.set()
    threads[0].join(5)
    assert ran == ["alice:predict"]


def test_places_count_the_turns_ahead_with_an_estimate() -> None:
    scheduler = Scheduler()
    release = hold(scheduler)
    tickets = [scheduler.join(s, "predict") for s in ("alice", "bob", "carol")]
    places = [scheduler.place(t) for t in tickets]
    assert [p.ahead for p in places if p] == [0, 1, 2]
    assert places[0] and places[2] and places[2].eta_s > places[0].eta_s
    assert "2 turns ahead" in Place(2, 3.0).describe()
    for ticket in tickets:
        scheduler.leave(ticket)
    release.set()


def test_batches_join_students_waiting_for_the_same_key_and_keep_errors_apart() -> None:
    scheduler = Scheduler(max_batch=8)
    release = hold(scheduler)
    batches: list[list[int]] = []

    def square_all(items: list[int]) -> list[object]:
        batches.append(list(items))
        return [LabError("negative numbers are refused") if i < 0 else i * i for i in items]

    results: dict[str, object] = {}

    def ask(student: str, item: int) -> None:
        try:
            results[student] = scheduler.run_batched(
                student, "square", key="square", item=item, batch_fn=square_all
            )
        except LabError as error:
            results[student] = str(error)

    threads = [threading.Thread(target=ask, args=(f"s{i}", i - 1)) for i in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(scheduler.snapshot()) == 6)
    release.set()
    for thread in threads:
        thread.join(5)
    assert batches == [[-1, 0, 1, 2, 3]]  # one forward pass for all five students
    assert results == {"s0": "negative numbers are refused", "s1": 0, "s2": 1, "s3": 4, "s4": 9}


def test_usage_is_counted_per_student_and_admit_can_refuse() -> None:
    def admit(student: str, kind: str) -> None:
        if kind == "paused":
            raise LabError("The instructor paused this tab")

    scheduler = Scheduler(admit=admit)
    with scheduler.turn("alice", "predict"):
        time.sleep(0.05)
    assert scheduler.usage("alice") >= 0.05
    assert scheduler.usage("bob") == 0
    with pytest.raises(LabError, match="paused"):
        scheduler.join("alice", "paused")
    assert scheduler.snapshot() == []


def test_cancelling_an_async_wait_leaves_the_queue() -> None:
    scheduler = Scheduler()
    release = hold(scheduler)
    heard: list[Place] = []

    async def wait_then_cancel() -> None:
        task = asyncio.create_task(_wait_for_turn(scheduler, heard))
        await asyncio.sleep(0.2)
        assert [r.state for r in scheduler.snapshot()] == ["running", "waiting"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    in_own_loop(wait_then_cancel())
    assert [r.state for r in scheduler.snapshot()] == ["running"]
    assert heard and heard[0].ahead == 0  # the waiter heard its place before it gave up
    release.set()


async def _wait_for_turn(scheduler: Scheduler, heard: list[Place]) -> None:
    async with scheduler.turn_async("alice", "predict", heard.append):
        raise AssertionError("the turn should not have come")
