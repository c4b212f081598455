"""The BLIP-2 tab in a real browser (Debian's chromium through Playwright), as a reader uses it.

The tab runs the tiny random BLIP-2 of ``lab.testing`` from a local folder typed into the page: the text it
writes is noise, and these tests only check that it arrives where a reader looks for it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.helpers import ARTIFACTS, serve_tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 60_000
MESSAGES = "document.querySelectorAll('#vc-chatbot [data-testid=user], #vc-chatbot [data-testid=bot]').length"


@pytest.fixture(scope="module")
def vision_server() -> Iterator[str]:
    from tabs import vision_chat

    with serve_tab(vision_chat.build, "BLIP-2 chat · ch. 9", "vision-chat") as url:
        yield url


@pytest.fixture
def page(open_page, vision_server):
    page = open_page(vision_server, height=1100)
    page.locator("#vc-model-status").filter(has_text="hf download").wait_for(timeout=TIMEOUT)
    return page


def test_tiny_random_blip2_example_image_caption_and_a_chat_turn(page, tiny_blip2):
    status = page.locator("#vc-model-status")
    # Offline, the page names the missing model, its size and the command that fetches it.
    assert "15.5 GB" in status.inner_text()
    assert "hf download Salesforce/blip2-opt-2.7b" in status.inner_text()

    page.locator("#vc-examples button").first.click()  # the book's car
    page.locator("#vc-image img").first.wait_for(timeout=TIMEOUT)
    page.locator("#vc-image-notes").filter(has_text="car.png").wait_for(timeout=TIMEOUT)
    folder = page.locator("#vc-folder textarea, #vc-folder input").first
    folder.fill(str(tiny_blip2))
    folder.press("Enter")
    status.filter(has_text="loads from folder").wait_for(timeout=TIMEOUT)

    page.locator("#vc-caption").click()
    page.wait_for_function(
        "() => (document.querySelector('#vc-caption-text textarea')?.value || '').trim().length > 0",
        timeout=TIMEOUT,
    )
    status.filter(has_text="is loaded from").wait_for(timeout=TIMEOUT)

    page.locator("#vc-question textarea").fill("Write down what you see in this picture.")
    page.locator("#vc-send").click()
    page.locator("#vc-chatbot").filter(has_text="Write down what you see").wait_for(timeout=TIMEOUT)
    page.wait_for_function(  # the answer is in and Send works again
        f"() => {MESSAGES} === 2 && !document.querySelector('#vc-send').disabled", timeout=TIMEOUT
    )
    page.locator("#vc-show-prompt input").check()
    page.wait_for_function(
        "() => document.querySelector('#vc-prompt textarea')?.value"
        " === 'Question: Write down what you see in this picture. Answer:'",
        timeout=TIMEOUT,
    )
    page.get_by_text("Under the hood: what the model receives").click()
    page.locator("#vc-hood-info").filter(has_text="4 query tokens").wait_for(timeout=TIMEOUT)
    page.locator("#vc-hood-image img").wait_for(timeout=TIMEOUT)
    assert page.locator("#vc-hood-tokens .t.special").count() == 5  # four <image> slots and the start token
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "vision_chat.png"), full_page=True)

    # Regenerate: the answer is replaced in place (still one question, one answer), and greedy decoding
    # writes the same text again. (Changing max-new-tokens through the slider first proved flaky in CI.)
    answer = page.locator('#vc-chatbot [data-testid="bot"]').inner_text()
    page.locator("#vc-regenerate").click()
    # Send is disabled while an answer streams; with the tiny model that can be too quick to see, so wait
    # for it briefly, then for the answer to be back, before the next step (or the stream would overwrite it).
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("() => document.querySelector('#vc-send').disabled", timeout=3000)
    page.wait_for_function(
        f"() => {MESSAGES} === 2 && !document.querySelector('#vc-send').disabled"
        f" && document.querySelector('#vc-chatbot [data-testid=bot]').innerText === {json.dumps(answer)}",
        timeout=TIMEOUT,
    )
    # Sampling: the answer is drawn from a fresh seed, shown with it; typed into Seed, it draws it again.
    page.get_by_text("Decoding: how each next token is chosen").click()
    page.locator("#vc-method").get_by_text("sampling").click()
    page.locator("#vc-seed input").wait_for(timeout=TIMEOUT)
    page.locator("#vc-regenerate").click()
    notice = page.locator("#vc-notice").filter(has_text="Sampled with seed")
    notice.wait_for(timeout=TIMEOUT)
    page.wait_for_function(
        f"() => {MESSAGES} === 2 && !document.querySelector('#vc-send').disabled", timeout=TIMEOUT
    )
    seed = re.search(r"seed (\d+)", notice.inner_text()).group(1)
    sampled = page.locator('#vc-chatbot [data-testid="bot"]').inner_text()
    page.locator("#vc-seed input").fill(seed)
    page.locator("#vc-seed input").press("Tab")
    page.locator("#vc-regenerate").click()
    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_function("() => document.querySelector('#vc-send').disabled", timeout=3000)
    page.wait_for_function(
        f"() => {MESSAGES} === 2 && !document.querySelector('#vc-send').disabled"
        f" && document.querySelector('#vc-chatbot [data-testid=bot]').innerText === {json.dumps(sampled)}",
        timeout=TIMEOUT,
    )
    assert f"seed {seed}" in notice.inner_text()
    page.locator("#vc-examples button").nth(1).click()  # the puppy: a new image starts a new conversation
    page.wait_for_function(
        f"() => {MESSAGES} === 0 && document.querySelector('#vc-caption-text textarea').value === ''",
        timeout=TIMEOUT,
    )
    assert page.outside_requests == []  # nothing from a CDN: the page works offline


def test_a_question_without_an_image_explains_what_to_do(page):
    page.locator("#vc-question textarea").fill("What is it?")
    page.locator("#vc-send").click()
    page.locator(".toast-body").filter(has_text="Add an image first").first.wait_for(timeout=TIMEOUT)
    assert page.locator("#vc-question textarea").input_value() == "What is it?"  # nothing was lost
