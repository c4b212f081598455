"""A class in chromium: a teacher (LAB_INSTRUCTORS) and a student, two logins on one launched lab.

One launch and one walk through the instructor's day, step by step: the panel is the teacher's only (a
direct call from the student is refused by the server), the teacher sees where the student is, pauses and
resumes a tab, sends a message and a prompt, then an image (an upload, then one of the book's), sets quotas
that refuse the student's next model request and a too-long fine-tune run, and cancels the student's run
(a tiny random-weight Llama). On the way, the student's own files (a result's downloads, the image for
their BLIP-2 chat) answer the student's login and not the teacher's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import local_settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 90_000
LOGINS = [("teacher", "teacher-pw"), ("student", "student-pw")]
ATTENTION = "Attention & embeddings · ch. 2–3"
CHATS = "".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"Item {i}?"}, {"role": "assistant", "content": "A."}]}
    )
    + "\n"
    for i in range(16)
)
# The student's page posts straight to the queue, as the page itself would, for the hidden panel's "Send".
CALL_PANEL = """async (url) => {
  const config = await (await fetch(url + "config")).json();
  const button = config.components.find(c => c.props && c.props.elem_id === "inst-send");
  const dep = config.dependencies.find(d => d.targets.some(t => t[0] === button.id && t[1] === "click"));
  const hash = "probe" + Math.random().toString(36).slice(2);
  await fetch(url + "gradio_api/queue/join", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({data: ["from the student", "", "", null, []], event_data: null, fn_index: dep.id,
                          trigger_id: button.id, session_hash: hash})});
  const reader = (await fetch(url + "gradio_api/queue/data?session_hash=" + hash)).body.getReader();
  let text = "";
  while (!text.includes("process_completed")) {
    const {value, done} = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  return text;
}"""


@pytest.fixture(scope="module")
def class_server():
    import app
    from lab.classroom import CLASSROOM

    settings = local_settings(auth=LOGINS, instructors=["teacher"])
    demo = app.build_demo(settings)
    try:
        yield app.serve(demo, settings, block=False)
    finally:
        demo.close()
        CLASSROOM.configure((), 0, 0)  # the rest of the tests run without a class


def logged_in(open_page, url: str, user: str):
    page = open_page(url, width=2400)  # wide enough for every tab's title, none in the overflow menu
    page.request.post(f"{url}login", form={"username": user, "password": dict(LOGINS)[user]})
    page.goto(url)
    page.get_by_role("tab", name=ATTENTION).wait_for(timeout=TIMEOUT)
    return page


def wait_until(page, condition, timeout: float = 60.0) -> None:
    """Wait for a condition on the server, letting the browser run meanwhile (the pages' requests are
    routed through this thread: a plain sleep would hold them)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(100)


def toast(page, text: str) -> None:
    page.locator(".toast-body").filter(has_text=text).first.wait_for(timeout=TIMEOUT)


def status_of(page, address: str) -> int:
    """The HTTP status of ``address`` fetched by ``page``, with its login's cookies."""
    return page.evaluate("async (url) => (await fetch(url)).status", address)


def image_address(page, box: str, holding: str) -> str:
    """The address of the picture shown in the image box ``box`` once it holds ``holding``."""
    picture = page.locator(f"{box} img[src*='{holding}']").first
    picture.wait_for(timeout=TIMEOUT)
    return picture.get_attribute("src")


def test_the_instructor_panel_with_a_teacher_and_a_student(open_page, class_server, tiny_llama, tmp_path):
    from gradio.utils import get_upload_folder
    from gradio_client import Client

    from lab import finetune
    from lab.classroom import CLASSROOM
    from tabs import access
    from tests.helpers import BOOK_IMAGES

    url = class_server
    teacher = logged_in(open_page, url, "teacher")
    student = logged_in(open_page, url, "student")

    # Only the teacher has the panel; the server refuses its events to the student.
    teacher.locator("#inst-panel").wait_for(state="visible", timeout=TIMEOUT)
    wait_until(student, lambda: any(p.owner == "user:student" for p in CLASSROOM.roster.pages()))  # loaded
    assert not student.locator("#inst-panel").is_visible()
    sent_before = CLASSROOM.broadcast.latest().version
    answer = student.evaluate(CALL_PANEL, url)
    assert "process_completed" in answer and "can use the instructor panel" in answer
    assert CLASSROOM.broadcast.latest().version == sent_before

    # The teacher sees the student on the tab they opened.
    student.get_by_role("tab", name=ATTENTION).click()
    teacher.wait_for_function(
        "() => [...document.querySelectorAll('#inst-class tr')].some(r => r.innerText.includes('student')"
        " && r.innerText.includes('Attention & embeddings'))",
        timeout=TIMEOUT,
    )

    # Pause: the student's tab says so and its model event is refused; resume: it runs.
    teacher.locator("#inst-paused").get_by_text("Attention & embeddings").click()
    student.locator("#paused-attention").wait_for(state="visible", timeout=TIMEOUT)
    student.locator("#att-run").click()
    toast(student, "The instructor paused the Attention & embeddings tab for now")
    teacher.locator("#inst-paused").get_by_text("Attention & embeddings").click()
    student.locator("#paused-attention").wait_for(state="hidden", timeout=TIMEOUT)
    student.locator("#att-run").click()
    student.frame_locator("#att-head-view iframe").locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    # The result's downloads are the student's: the teacher's login cannot fetch them.
    student.locator("#att-code-panel").get_by_text("Show the code · download").click()
    download = student.locator("#att-downloads a[href*='llm-lab-results']").first
    download.wait_for(timeout=TIMEOUT)
    address = download.get_attribute("href")
    assert status_of(student, address) == 200 and status_of(teacher, address) == 403

    # Send to the class: the text shows on the student's page and the prompt fills their box.
    teacher.locator("#inst-text textarea").fill("Look at layer 2, head 3")
    teacher.locator("#inst-target input").click()
    teacher.get_by_role("option", name="Attention: text").click()
    teacher.locator("#inst-prompt textarea").fill("A sentence for everyone")
    teacher.locator("#inst-send").click()
    student.locator("#class-message").filter(has_text="Look at layer 2, head 3").wait_for(timeout=TIMEOUT)
    student.wait_for_function(
        "() => document.querySelector('#att-text textarea')?.value === \"A sentence for everyone\"",
        timeout=TIMEOUT,
    )

    # The image the student chats about in the BLIP-2 tab is theirs too.
    photo = tmp_path / "students-photo.png"
    photo.write_bytes((BOOK_IMAGES / "puppy.png").read_bytes() + b"the student's own bytes")
    student.get_by_role("tab", name="BLIP-2 chat · ch. 9").click()
    student.locator("#vc-image input[type=file]").set_input_files(str(photo))
    address = image_address(student, "#vc-image", "students-photo.png")
    assert status_of(student, address) == 200 and status_of(teacher, address) == 403

    # An image: the teacher's upload reaches the student's zero-shot box and BLIP-2 chat as the class's copy
    # (readable by every login), and the upload itself is deleted.
    upload = tmp_path / "class-cat.png"
    upload.write_bytes((BOOK_IMAGES / "cat.png").read_bytes())
    teacher.locator("#inst-image input[type=file]").set_input_files(str(upload))
    teacher.locator("#inst-image img").wait_for(timeout=TIMEOUT)
    for box in ("CLIP: zero-shot image", "BLIP-2: chat image"):
        teacher.locator("#inst-image-targets").get_by_text(box).click()
    teacher.locator("#inst-send").click()
    student.locator("#class-message").filter(
        has_text="An image is in: CLIP: zero-shot image, BLIP-2: chat image"
    ).wait_for(timeout=TIMEOUT)
    sent = Path(CLASSROOM.broadcast.latest().image)
    assert sent.name == "class-cat.png" and sent.is_relative_to(access.CLASS_FILES)
    chat_image = image_address(student, "#vc-image", "llm-lab-class")  # the chat the student had open
    assert status_of(student, chat_image) == 200
    student.get_by_role("tab", name="CLIP search · ch. 9").click()
    student.get_by_role("tab", name="Zero-shot labels").click()
    assert status_of(student, image_address(student, "#clip-zs-image", "class-cat.png")) == 200
    uploads = [p for p in Path(get_upload_folder()).rglob("class-cat.png") if not access.is_lab_file(p)]
    assert uploads == []

    # One of the book's images replaces it in both boxes; the older copy is deleted.
    example = teacher.locator("#inst-panel img[src*='car.png']").first
    example_address = example.get_attribute("src")
    example.click()
    teacher.locator("#inst-image img").wait_for(timeout=TIMEOUT)
    teacher.locator("#inst-send").click()  # to the same two boxes, still ticked
    image_address(student, "#clip-zs-image", "car.png")
    assert not sent.exists() and Path(CLASSROOM.broadcast.latest().image).name == "car.png"
    assert status_of(teacher, example_address) == 200  # the example itself is only copied, never deleted

    student.get_by_role("tab", name=ATTENTION).click()

    # Quotas: the student's model seconds are spent (their first request ran), and a long run is refused.
    teacher.locator("#inst-gpu input").fill("0.001")
    teacher.locator("#inst-steps input").fill("10")
    teacher.locator("#inst-set-quotas").click()
    toast(teacher, "Quotas: 0.001 model seconds")
    student.locator("#att-run").click()
    toast(student, "You have used your quota of 0.001 model seconds")
    client = Client(url, auth=LOGINS[1], verbose=False)
    changes = {"base_model": str(tiny_llama), "max_examples": 12, "eval_examples": 0, "max_seq_length": 32}
    with pytest.raises(Exception, match="your quota is 10 fine-tune steps"):
        client.predict(
            "Classroom quick (CPU)", {**changes, "max_steps": 100_000}, CHATS, api_name="/finetune_start"
        )

    # The teacher lifts the quotas and cancels the student's run.
    teacher.locator("#inst-gpu input").fill("0")
    teacher.locator("#inst-steps input").fill("0")
    teacher.locator("#inst-set-quotas").click()
    toast(teacher, "Quotas: 0 model seconds")
    run = client.predict(
        "Classroom quick (CPU)", {**changes, "max_steps": 100_000}, CHATS, api_name="/finetune_start"
    )
    job = finetune.get_job(run["job_id"])
    assert job.owner == "user:student"
    teacher.locator("#inst-jobs").filter(has_text=run["job_id"]).wait_for(timeout=TIMEOUT)
    teacher.locator("#inst-job input").click()
    teacher.get_by_role("option", name=f"{run['job_id']} · student").click()
    teacher.locator("#inst-cancel").click()
    toast(teacher, f"Run {run['job_id']} of student: cancelled")
    assert job.status == "cancelled"
    assert not student.script_errors and not teacher.script_errors
