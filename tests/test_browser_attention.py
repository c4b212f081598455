"""The attention tab in chromium: the head view draws its lines, the model view opens a head."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 90_000
LONG_TEXT = " ".join(["the quick brown fox jumps over the lazy dog"] * 14)  # 128 tokens with [CLS] [SEP]


@pytest.fixture
def page(open_page, lab_server):
    page = open_page(lab_server)
    page.get_by_role("tab", name="Attention & embeddings · ch. 2–3").click()
    return page


def painted_pixels(frame) -> int:
    return frame.locator("#lines").evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"
    )


def test_head_view_draws_lines_for_128_tokens_and_hover_isolates_one_token(page):
    page.locator("#att-text textarea").fill(LONG_TEXT)
    page.locator("#att-run").click()
    frame = page.frame_locator("#att-head-view iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    assert frame.locator("#left .tok").count() == 128
    all_lines = painted_pixels(frame)
    assert all_lines > 1000
    frame.locator("#left .tok").nth(5).hover()
    assert 0 < painted_pixels(frame) < all_lines  # only that token's lines remain
    render_ms = int(frame.locator("body").get_attribute("data-render-ms"))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "head_view_render.json").write_text(json.dumps({"tokens": 128, "render_ms": render_ms}))
    print(f"head view, 128 tokens: first draw {render_ms} ms in chromium")


def test_toggling_heads_and_sinks_redraws(page):
    page.locator("#att-run").click()
    frame = page.frame_locator("#att-head-view iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    before = painted_pixels(frame)
    frame.locator("#none").click()
    assert painted_pixels(frame) == 0
    frame.locator(".head").first.click()
    one_head = painted_pixels(frame)
    assert 0 < one_head < before
    frame.locator("#sinks").check()
    assert painted_pixels(frame) != one_head


def test_clicking_the_model_view_opens_that_head(page):
    page.locator("#att-run").click()
    page.frame_locator("#att-head-view iframe").locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    image = page.locator("#att-model-view img")
    image.wait_for(timeout=TIMEOUT)
    # The picture is drawn with object-fit: contain, so find where it really sits inside the element.
    box = image.bounding_box()
    natural_w, natural_h = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    scale = min(box["width"] / natural_w, box["height"] / natural_h)
    left = (box["width"] - natural_w * scale) / 2
    top = (box["height"] - natural_h * scale) / 2
    cell = 40  # MiniLM: 6 layers × 12 heads, 40-pixel squares after a 28-pixel margin
    x, y = 28 + 3 * (cell + 4) + 10, 28 + 2 * (cell + 4) + 10
    image.click(position={"x": left + x * scale, "y": top + y * scale})
    page.wait_for_function(
        "() => document.querySelector('#att-single')?.textContent.includes('layer 2 · head 3')",
        timeout=TIMEOUT,
    )


def test_next_token_chart_and_logit_lens(page):
    page.get_by_role("tab", name="Inside the forward pass").click()
    page.locator("#fwd-run").click()
    page.wait_for_function(
        "() => document.querySelector('#fwd-chart')?.textContent.includes('Paris')", timeout=TIMEOUT
    )
    page.get_by_text("Layer by layer: the logit lens").click()
    page.locator("#fwd-lens-run").click()
    page.wait_for_function(
        "() => document.querySelector('#fwd-lens')?.innerText.includes('layer 29')", timeout=TIMEOUT
    )


def test_cancel_during_kv_cache_generation_frees_the_model_for_the_next_request_at_once(page):
    """The server runs in this process: after Cancel, no generation thread is left and the model is free."""
    import time

    from lab import cache, streaming

    page.get_by_role("tab", name="Inside the forward pass").click()
    page.get_by_text("The KV cache: generation with and without it").click()
    page.locator("#fwd-kv-run").click()
    page.wait_for_function(  # SmolLM2 is writing (its greedy text grows in the box)
        "() => (document.querySelector('#fwd-kv-text textarea')?.value || '').length > 5", timeout=TIMEOUT
    )
    assert streaming.running_threads()
    page.locator("#fwd-kv-stop").click()
    deadline = time.monotonic() + 10  # Gradio closes the stream asynchronously after the click
    while streaming.running_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert streaming.running_threads() == []
    assert all(s.leases == 0 for s in cache.stats())  # the lease went back with the thread
    page.locator("#fwd-run").click()  # the next request runs, not queued behind a ghost generation
    page.wait_for_function(
        "() => document.querySelector('#fwd-chart')?.textContent.includes('Paris')", timeout=TIMEOUT
    )


def test_a_request_waiting_for_the_model_shows_its_place_and_then_runs(page):
    """The server runs in this process: the test holds the model queue itself, as a long request would."""
    import threading

    from lab.scheduler import SCHEDULER

    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        with SCHEDULER.turn("someone else", "a long request"):
            holding.set()
            release.wait(60)

    threading.Thread(target=hold, daemon=True).start()
    assert holding.wait(10)
    try:
        page.locator("#att-run").click()
        page.wait_for_function(
            "() => document.body.innerText.includes('next in the model queue')", timeout=TIMEOUT
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "queue_place.png"))
    finally:
        release.set()
    frame = page.frame_locator("#att-head-view iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)  # its turn came: it ran
