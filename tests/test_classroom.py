"""lab.classroom: the instructor's rules (pauses, quotas, messages, who is here) and their hooks into the
model queue and the fine-tune runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.classroom import (
    Broadcast,
    Classroom,
    NotInstructor,
    OverQuota,
    Paused,
    Quotas,
    Roster,
    public_name,
    tab_of,
)
from lab.errors import LabError
from lab.scheduler import Scheduler

ALICE, TEACHER = "user:alice", "user:teacher"


def room(**quotas: float) -> tuple[Classroom, Scheduler]:
    scheduler = Scheduler()
    classroom = Classroom(instructors={"teacher"}, quotas=Quotas(**quotas), gpu_usage=scheduler.usage)
    classroom.titles = {"attention": "Attention & embeddings"}
    scheduler.admit = classroom.admit
    return classroom, scheduler


def test_a_paused_tab_refuses_students_in_the_model_queue_until_resumed_but_not_instructors():
    classroom, scheduler = room()
    classroom.set_paused({"attention"})
    with pytest.raises(Paused, match="The instructor paused the Attention & embeddings tab for now"):
        scheduler.join(ALICE, "attention · predict")
    assert scheduler.snapshot() == []  # refused before it waited
    with scheduler.turn(TEACHER, "attention · predict"):
        pass
    classroom.kinds = {"next_token": "attention"}  # a batched kind named by its feature
    with pytest.raises(Paused):
        scheduler.join(ALICE, "next_token")
    with scheduler.turn(ALICE, "topics · fit"):  # other tabs run
        pass
    classroom.set_paused(())
    with scheduler.turn(ALICE, "attention · predict"):
        pass


def test_the_model_seconds_quota_refuses_the_request_after_the_quota_is_used_and_says_how_much():
    classroom, scheduler = room(gpu_seconds=0.001)
    with scheduler.turn(ALICE, "attention · predict"):
        sum(range(200_000))  # some real model-queue time
    assert scheduler.usage(ALICE) > 0.001
    with pytest.raises(OverQuota, match=r"quota of 0\.001 model seconds.*0 s left"):
        scheduler.join(ALICE, "attention · predict")
    with scheduler.turn("user:bob", "attention · predict"):  # another student has their own allowance
        pass
    for _ in range(2):  # instructors are not limited
        with scheduler.turn(TEACHER, "attention · predict"):
            sum(range(200_000))
    classroom.quotas.set(0, 0)  # the instructor lifts the quota at run time
    with scheduler.turn(ALICE, "attention · predict"):
        pass


def test_the_finetune_steps_quota_counts_used_steps_and_states_what_is_left():
    classroom, _ = room(finetune_steps=50)
    classroom.admit_finetune(ALICE, 30, 20)  # exactly the quota
    with pytest.raises(OverQuota, match="trains 31 steps.*quota is 50.*used 20: 30 left"):
        classroom.admit_finetune(ALICE, 31, 20)
    classroom.admit_finetune(TEACHER, 1000, 1000)
    classroom.admit_finetune(None, 1000, 1000)  # started from Python: the instructor's own
    classroom.set_paused({"finetune"})
    with pytest.raises(Paused):
        classroom.admit_finetune(ALICE, 1, 0)


def test_quotas_refuse_negative_values():
    with pytest.raises(LabError, match="0 \\(unlimited\\) or more"):
        Quotas().set(-1, 0)


def test_only_instructor_logins_are_instructors():
    classroom, _ = room()
    classroom.require_instructor(TEACHER)
    for owner in ("user:alice", "session:teacher", "teacher", "local", None):
        assert not classroom.is_instructor(owner)
        with pytest.raises(NotInstructor):
            classroom.require_instructor(owner)


def test_public_names_show_logins_but_never_a_session_hash():
    assert public_name("user:alice") == "alice"
    assert public_name("user:alice", viewer="user:alice") == "you"
    label = public_name("session:0123456789abcdef")
    assert label.startswith("guest ") and "0123" not in label
    assert label == public_name("session:0123456789abcdef")  # stable, so a queue can be followed
    assert label != public_name("session:fedcba9876543210")


def test_tab_of_reads_the_kind_of_a_model_event():
    assert tab_of("attention · predict") == "attention"
    assert tab_of("next_token") == "next_token"


def test_roster_follows_tab_changes_and_drops_silent_or_closed_pages():
    now = [1000.0]
    roster = Roster(ttl_s=30, clock=lambda: now[0])
    roster.seen("s1", ALICE, "Tokenizers")
    roster.seen("s2", "user:bob", "Tokenizers")
    now[0] += 10
    roster.seen("s1", ALICE, "Attention & embeddings")
    roster.seen("s1", ALICE)  # a tick: still there, still on that tab
    [alice, bob] = roster.pages()
    assert (alice.owner, alice.tab, alice.since) == (ALICE, "Attention & embeddings", 1010.0)
    now[0] += 25  # bob's page has been silent for 35 s
    assert [p.owner for p in roster.pages()] == [ALICE]
    roster.left("s1")
    assert roster.pages() == []


def test_broadcast_numbers_each_message_and_needs_a_box_for_a_prompt():
    broadcast = Broadcast()
    assert broadcast.latest().version == 0
    first = broadcast.send("  Look at head 3  ")
    assert (first.version, first.text, first.target) == (1, "Look at head 3", "")
    with pytest.raises(LabError, match="Choose the box"):
        broadcast.send("", prompt="The cat")
    with pytest.raises(LabError, match="Write a message or a prompt, or choose an image"):
        broadcast.send("  ")
    second = broadcast.send("", prompt="The cat", target="Attention: text")
    assert (second.version, second.prompt, broadcast.latest()) == (2, "The cat", second)


def test_class_version_grows_with_every_change_pages_show():
    classroom, _ = room()
    start = classroom.version
    classroom.set_paused({"topics"})
    classroom.send("hello")
    assert classroom.version == start + 2
    classroom.configure(["teacher"], 5, 10)  # a new class: nothing paused
    assert classroom.pauses.paused() == frozenset()
    assert (classroom.quotas.gpu_seconds, classroom.quotas.finetune_steps) == (5.0, 10)


def test_an_image_sent_to_the_class_is_checked_copied_and_deleted_once_replaced_everywhere(tmp_path):
    from lab.images import BadImage
    from tests.helpers import BOOK_IMAGES

    upload = tmp_path / "upload" / "teachers car.png"  # the instructor's upload, deleted with their session
    upload.parent.mkdir()
    upload.write_bytes((BOOK_IMAGES / "car.png").read_bytes())
    broadcast = Broadcast(folder=tmp_path / "class", max_image_bytes=2**20)

    sent = broadcast.send("", image=upload, image_targets=["BLIP-2: chat image", "CLIP: image query"])
    copy = Path(sent.image)
    assert copy.read_bytes() == upload.read_bytes() and copy.is_relative_to(tmp_path / "class")
    assert copy.name == "teachers_car.png" and sent.image_targets == (
        "BLIP-2: chat image",
        "CLIP: image query",
    )
    upload.unlink()  # the upload goes; the class's copy stays
    assert copy.exists() and broadcast.latest() == sent

    with pytest.raises(LabError, match="Choose the boxes the image goes into"):
        broadcast.send("Look", image=copy)
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("I am not a picture")
    with pytest.raises(BadImage, match="notes.png is not an image the lab can read"):
        broadcast.send("", image=not_a_picture, image_targets=["CLIP: image query"])
    broadcast.max_image_bytes = 1000
    with pytest.raises(BadImage, match=r"car.png is \d+ KB; an image sent to the class may be at most 1 KB"):
        broadcast.send("", image=copy, image_targets=["CLIP: image query"])
    assert broadcast.latest() == sent and copy.exists()  # a refused message changes nothing

    broadcast.max_image_bytes = 2**20
    text_only = broadcast.send("Now caption it")
    assert text_only.image == "" and copy.exists()  # pages that have the image keep it
    cat = broadcast.send("A cat", image=BOOK_IMAGES / "cat.png", image_targets=["BLIP-2: chat image"])
    assert Path(cat.image).name == "cat.png" and copy.exists()  # still in every page's CLIP query box
    puppy = broadcast.send("", image=BOOK_IMAGES / "puppy.png", image_targets=["CLIP: image query"])
    assert not copy.parent.exists()  # replaced in both its boxes: deleted
    assert Path(cat.image).exists() and Path(puppy.image).exists()
    broadcast.drop_image()
    assert not Path(cat.image).exists() and not Path(puppy.image).exists()
    assert broadcast.latest().image == "" and broadcast.latest().version == puppy.version


def test_a_new_class_starts_without_the_last_class_image(tmp_path):
    from tests.helpers import CAR

    classroom, _ = room()
    classroom.configure(["teacher"], 0, 0, image_folder=tmp_path / "class", max_image_bytes=2**20)
    start = classroom.version
    sent = classroom.send("", image=CAR, image_targets=["BLIP-2: chat image"])
    assert classroom.version == start + 1 and Path(sent.image).exists()
    classroom.configure(["teacher"], 0, 0)
    assert not Path(sent.image).exists() and classroom.broadcast.latest().image == ""
