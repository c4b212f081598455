"""A shared classroom server: each student's runs and files are their own, uploads and logins are capped.

The rules (:mod:`lab.sessions`) are tested on their own with a fake clock; the web layer (``tabs/access.py``)
against launched apps, with two real gradio_client clients and two logins (``ada`` and ``bob``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest

from lab import sessions
from lab.errors import InputError
from tests.helpers import CAR, in_own_loop, local_settings

LOGINS = [("ada", "ada-pw"), ("bob", "bob-pw")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(condition: Any, timeout: float = 60.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- the rules, in lab.sessions -----------------------------------------------------------------------


def test_the_owner_of_a_request_is_the_login_else_the_tab():
    class Request:
        def __init__(self, username: str | None, session_hash: str | None) -> None:
            self.username, self.session_hash = username, session_hash

    assert sessions.owner_of(Request("ada", "x1")) == "user:ada"
    assert sessions.owner_of(Request(None, "x1")) == "session:x1"
    assert sessions.owner_of(None) == "local"
    sessions.check_owner("user:ada", "user:ada")
    sessions.check_owner(None, "user:bob")  # a run started from Python is nobody's
    with pytest.raises(sessions.NotYours, match="belongs to another student"):
        sessions.check_owner("user:ada", "user:bob")


def test_five_wrong_passwords_in_a_minute_block_the_address_for_30_s():
    clock = Clock()
    throttle = sessions.LoginThrottle(clock=clock)
    for _ in range(4):
        throttle.failed("10.0.0.7")
        clock.now += 10
    assert throttle.wait_s("10.0.0.7") == 0  # four in 40 s: still allowed
    clock.now += 30  # the first failure leaves the minute: the fifth is only the fourth within it
    throttle.failed("10.0.0.7")
    assert throttle.wait_s("10.0.0.7") == 0
    throttle.failed("10.0.0.7")
    assert throttle.wait_s("10.0.0.7") == pytest.approx(30)
    assert throttle.wait_s("10.0.0.8") == 0  # another computer is not blocked
    assert "Wait 30 s" in throttle.message(throttle.wait_s("10.0.0.7"))
    clock.now += 30.5
    assert throttle.wait_s("10.0.0.7") == 0


def test_the_upload_budget_is_per_student_over_a_sliding_hour():
    clock = Clock()
    budget = sessions.UploadBudget(max_bytes=100, clock=clock)
    budget.charge("ada", 60)
    clock.now += 1800
    budget.charge("ada", 30)
    budget.check("bob", 100)
    with pytest.raises(sessions.TooMuch, match="per hour") as refused:
        budget.check("ada", 20)
    assert refused.value.status == 429 and refused.value.retry_after_s == pytest.approx(1800)
    clock.now += 1801  # the first 60 bytes have left the hour
    budget.check("ada", 70)


def test_private_folders_are_read_by_their_login_only(tmp_path):
    folders = sessions.PrivateFolders(tmp_path / "private")
    ada = folders.create("user:ada")
    tab = folders.create("session:0123")
    assert ada.parent == folders.root and len(ada.name) == 32 and ada != tab
    assert folders.may_read(ada / "0000.jpg", "ada")
    assert not folders.may_read(ada / "0000.jpg", "bob") and not folders.may_read(ada / "0000.jpg", None)
    assert folders.may_read(tab / "0000.jpg", None)  # without logins the random name is the key
    assert not folders.may_read(folders.root / "feedbeef" / "x.jpg", "ada")  # unknown folder: nobody
    assert not folders.holds(tmp_path / "elsewhere.jpg")
    assert not folders.holds(ada / ".." / ".." / "elsewhere.jpg")
    folders.delete(ada)
    assert not ada.exists() and not folders.may_read(ada / "0000.jpg", "ada")


def test_old_result_folders_are_swept_with_their_owners_and_not_too_often(tmp_path):
    folders = sessions.PrivateFolders(tmp_path / "results")
    old, new = folders.create("user:ada"), folders.create("user:ada")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    folders.sweep(3600, every_s=60)
    assert new.is_dir() and not old.exists() and folders.owner(old / "x.csv") is None
    os.utime(new, (time.time() - 7200, time.time() - 7200))
    folders.sweep(3600, every_s=60)  # swept a moment ago: not again yet
    assert new.is_dir()
    folders.sweep(3600)
    assert not new.exists()


def test_an_upload_is_read_by_the_logins_that_uploaded_it(tmp_path):
    uploads = sessions.UploadOwners()
    picture = tmp_path / "0123" / "car.png"
    uploads.add(picture, "ada")
    assert uploads.may_read(picture, "ada") and not uploads.may_read(picture, "bob")
    assert not uploads.may_read(picture, None)  # nobody without a login either
    assert uploads.may_read(tmp_path / "gradio-own.webp", "bob")  # not an upload: Gradio's rules apply
    uploads.add(tmp_path / "0123" / ".." / "0123" / "car.png", "bob")  # the same bytes, the same path
    assert uploads.owners(picture) == {"ada", "bob"}
    uploads.forget(picture)
    assert uploads.owners(picture) is None
    few = sessions.UploadOwners(max_files=10)
    for n in range(11):
        few.add(tmp_path / f"{n}.png", "ada")  # none exists: all forgotten, the newest kept
    assert few.owners(tmp_path / "10.png") == {"ada"} and few.owners(tmp_path / "0.png") is None


def test_a_run_from_an_earlier_server_is_compared_only_by_its_recorded_owner(tmp_path, monkeypatch):
    from lab import finetune
    from lab.finetune import runs

    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    folder = runs.new_run_dir()
    (folder / runs.OWNER).write_text("user:ada")
    assert finetune.run_folder(folder.name, "user:ada") == folder
    assert finetune.run_folder(folder.name) == folder  # Python (a notebook) is not a student
    with pytest.raises(sessions.NotYours):
        finetune.run_folder(folder.name, "user:bob")
    unowned = runs.new_run_dir()  # e.g. trained from a notebook: no student's
    with pytest.raises(sessions.NotYours):
        finetune.run_folder(unowned.name, "user:ada")
    with pytest.raises(InputError, match="No run"):
        finetune.owned_job("20260101-000000-00000000", "user:ada")


def test_files_are_counted_even_when_a_boundary_is_split_between_chunks():

    from tabs.access import AccessGuard

    boundary = b"lab-boundary-0123456789"
    parts = b"".join(
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="files"; filename="%d.bin"\r\n\r\nxx\r\n' % n
        for n in range(4)
    )
    body = parts + b"--" + boundary + b"--\r\n"

    async def app(scope: Any, receive: Any, send: Any) -> None:  # reads everything, then says OK
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    def post(max_files: int) -> int:
        chunks = [body[i : i + 7] for i in range(0, len(body), 7)]  # every boundary falls across chunks
        messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
        messages[-1]["more_body"] = False
        sent: list[dict] = []

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/gradio_api/upload", "client": ("10.0.0.7", 1),
                 "headers": [(b"content-type", b"multipart/form-data; boundary=" + boundary)],
                 "query_string": b""}  # fmt: skip
        guard = AccessGuard(app, local_settings(max_upload_files_per_request=max_files))
        in_own_loop(guard(scope, receive, send))
        return sent[0]["status"]

    assert post(max_files=4) == 200
    assert post(max_files=3) == 413


# -- the web layer, against launched apps ----------------------------------------------------------------


@contextlib.contextmanager
def served(build: Any, **changes: Any) -> Iterator[str]:
    """A page built by ``build(demo, settings)``, served as ``app.serve`` serves the lab."""
    import app
    from tabs import access

    settings = local_settings(**changes)
    with gr.Blocks(title="LLM Lab · access") as demo:
        build(demo, settings)
        access.free_closed_sessions(demo, settings)
    try:
        yield app.serve(demo, settings, block=False)
    finally:
        demo.close()


def login(url: str, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{url}login", data={"username": user, "password": password}, timeout=30)


@pytest.fixture(scope="module")
def classroom() -> Iterator[str]:
    """The fine-tune and CLIP tabs behind two logins; a closed tab's data goes 1 s after it closed."""
    import tabs.clip_search
    import tabs.finetune

    def build(demo: gr.Blocks, settings: Any) -> None:
        with gr.Tabs():
            with gr.Tab("Fine-tune", id="finetune"):
                tabs.finetune.build(demo, settings)
            with gr.Tab("CLIP", id="clip"):
                tabs.clip_search.build(demo, settings)

    heartbeat = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.5"  # a closed client is noticed within a second
    try:
        with served(build, auth=LOGINS, closed_grace_s=1.0) as url:
            yield url
    finally:
        if heartbeat is None:
            os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
        else:
            os.environ["GRADIO_HEARTBEAT_INTERVAL"] = heartbeat


def client(url: str, user: str, **options: Any) -> Any:
    from gradio_client import Client

    return Client(url, auth=(user, dict(LOGINS)[user]), verbose=False, **options)


@pytest.mark.slow
def test_another_student_can_neither_read_nor_cancel_nor_compare_a_run(classroom, tiny_llama):
    ada, bob = client(classroom, "ada"), client(classroom, "bob")
    changes = {"base_model": str(tiny_llama), "max_examples": 8, "eval_examples": 0, "max_seq_length": 32,
               "max_steps": 100_000, "cpu_threads": 1}  # fmt: skip
    run = ada.predict("Classroom quick (CPU)", changes, "", api_name="/finetune_start")
    try:
        assert run["status"] in ("queued", "running") and "output_dir" not in run
        job_id = run["job_id"]
        for call in (
            lambda: bob.predict(job_id, 5, api_name="/finetune_status"),
            lambda: bob.predict(job_id, api_name="/finetune_cancel"),
            lambda: bob.predict("Hello", job_id, 4, api_name="/finetune_compare"),
        ):
            with pytest.raises(Exception, match="belongs to another student") as refused:
                call()
            assert job_id not in str(refused.value) and "runs" not in str(refused.value)
        mine = ada.predict(job_id, 5, api_name="/finetune_status")
        assert mine["job_id"] == job_id and mine["status"] in (
            "queued",
            "running",
        )  # bob's cancel did nothing
        assert "output_dir" not in mine and not any("/runs/" in line for line in mine["logs"])
    finally:
        cancelled = ada.predict(run["job_id"], api_name="/finetune_cancel")
    assert cancelled["status"] == "cancelled"


def gallery_add(who: Any, picture: Path = CAR) -> list[dict[str, Any]]:
    """Add a picture to the student's CLIP gallery, as the page's button does; their private images."""
    from gradio_client import handle_file

    items, *_ = who.predict([handle_file(str(picture))], api_name="/clip_gallery_add")
    return [item["image"] for item in items if "llm-lab-private" in item["image"]["path"]]


@pytest.mark.slow
def test_another_student_cannot_fetch_a_gallery_image_by_its_address(classroom, tmp_path):
    from gradio.utils import get_upload_folder

    from tabs import access

    ada = client(classroom, "ada", download_files=False)
    bob = client(classroom, "bob", download_files=False)
    picture = tmp_path / "adas-car.png"  # a name of its own: the default gallery's car is in the cache too
    picture.write_bytes(CAR.read_bytes())
    mine = gallery_add(ada, picture)
    assert len(mine) == 1
    address = mine[0]["url"] or f"{classroom}gradio_api/file={mine[0]['path']}"
    assert httpx.get(address, cookies=ada.cookies, timeout=30).status_code == 200
    refused = httpx.get(address, cookies=bob.cookies, timeout=30)
    assert refused.status_code == 403 and "another student" in refused.json()["detail"]
    assert httpx.get(address, timeout=30).status_code in (401, 403)  # and nobody without a login
    # The uploaded file itself was deleted once read: only the private copy remains.
    uploads = [p for p in Path(get_upload_folder()).rglob(picture.name) if not access.PRIVATE.holds(p)]
    assert uploads == []


@pytest.mark.slow
def test_an_upload_is_served_to_the_logins_that_uploaded_it_only(classroom):
    """An image for the BLIP-2 chat (or a CLIP query, a corpus, chats to fine-tune on) goes up as the page
    sends it, and the page shows it from the upload's address: only its uploader's login may read it."""
    ada, bob = client(classroom, "ada"), client(classroom, "bob")
    photo = CAR.read_bytes() + b"ada's own bytes"  # PNG readers stop at the image's end
    [path] = upload(classroom, [("adas-photo.png", photo)], cookies=ada.cookies).json()
    for address in (f"{classroom}gradio_api/file={path}", f"{classroom}gradio_api/file/{path}"):
        assert httpx.get(address, cookies=ada.cookies, timeout=30).content == photo
        refused = httpx.get(address, cookies=bob.cookies, timeout=30)
        assert refused.status_code == 403 and "not yours" in refused.json()["detail"]
    # Gradio names an upload by its bytes: bob, uploading the very same file, reads it as his own.
    assert upload(classroom, [("adas-photo.png", photo)], cookies=bob.cookies).json() == [path]
    assert httpx.get(f"{classroom}gradio_api/file={path}", cookies=bob.cookies, timeout=30).status_code == 200
    # A file the page shows everyone (the zero-shot box's puppy) stays readable when a student uploads it.
    puppy = (CAR.parent / "puppy.png").read_bytes()
    [kept] = upload(classroom, [("puppy.png", puppy)], cookies=ada.cookies).json()
    assert httpx.get(f"{classroom}gradio_api/file={kept}", cookies=bob.cookies, timeout=30).status_code == 200


@pytest.mark.slow
def test_a_closed_tabs_gallery_is_deleted_after_the_grace(classroom):
    ada = client(classroom, "ada", download_files=False)
    folder = Path(gallery_add(ada)[0]["path"]).parent
    assert folder.is_dir()
    time.sleep(1.5)  # the state is older than the grace when the tab closes: it goes at once
    assert folder.is_dir()  # an open tab keeps its gallery
    ada.close()  # the heartbeat stops, as when a browser tab closes
    wait_for(lambda: not folder.exists(), timeout=30, what="the closed session's gallery to be deleted")


@pytest.fixture
def plain_page() -> Iterator[Any]:
    """A server of its own per test (the throttle and budgets count per server): ``url = plain_page(...)``."""
    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(
            served(lambda demo, settings: gr.Markdown("LLM Lab"), **changes)
        )


def upload(url: str, files: list[tuple[str, bytes]], cookies: Any = None) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return httpx.post(f"{url}gradio_api/upload", files=parts, cookies=cookies, timeout=60)


@pytest.mark.slow
def test_uploads_are_capped_per_request_in_bytes_and_files_and_per_student_per_hour(plain_page):
    url = plain_page(max_upload_mb_per_request=1, max_upload_files_per_request=3, max_upload_mb_per_student=2)
    kib = b"x" * 1024
    assert upload(url, [("a.bin", kib * 600)]).status_code == 200

    too_big = upload(url, [("big.bin", kib * 1100)])
    assert too_big.status_code == 413 and "over 1 MB" in too_big.text
    too_many = upload(url, [(f"{n}.bin", kib) for n in range(4)])
    assert too_many.status_code == 413 and "more than 3 files" in too_many.text
    assert upload(url, [(f"{n}.bin", kib) for n in range(3)]).status_code == 200

    assert upload(url, [("b.bin", kib * 900)]).status_code == 200  # 1.5 MB of 2 this hour
    over = upload(url, [("c.bin", kib * 700)])
    assert over.status_code == 429 and "per hour" in over.text
    assert int(over.headers["retry-after"]) > 0


@pytest.mark.slow
def test_login_is_refused_for_30_s_after_five_wrong_passwords(plain_page):
    url = plain_page(auth=LOGINS)
    assert login(url, "ada", "ada-pw").status_code == 200
    for _ in range(5):
        assert login(url, "ada", "guess").status_code == 400
    blocked = login(url, "ada", "ada-pw")  # even the right password waits
    assert blocked.status_code == 429 and "Too many wrong passwords" in blocked.json()["detail"]
    assert 25 <= int(blocked.headers["retry-after"]) <= 30
