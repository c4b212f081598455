"""The fine-tune tab in chromium: preview and estimate, a live loss curve that grows, and Cancel."""

from __future__ import annotations

import pytest

from tests.helpers import ARTIFACTS, serve_tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 180_000
POINTS = "() => document.querySelectorAll('#ft-loss .scatterlayer .trace:first-child .point').length"


@pytest.fixture(scope="module")
def finetune_server():
    import tabs.finetune

    with serve_tab(tabs.finetune.build, "Fine-tune · ch. 12", "finetune") as url:
        yield url


@pytest.fixture
def page(open_page, finetune_server):
    return open_page(finetune_server, wait_for="#ft-start")


def test_quick_preset_previews_trains_with_a_growing_loss_curve_and_cancels(page):
    page.get_by_text("Classroom quick (CPU)").click()
    page.wait_for_function("() => document.querySelector('#ft-method')?.innerText.includes('LoRA fp32')")
    page.locator("#ft-check").click()
    page.wait_for_function(
        "() => document.querySelector('#ft-plan')?.innerText.includes('2,442,240')", timeout=TIMEOUT
    )
    page.get_by_role("button", name="The data as the model reads it").click()
    assert page.locator("#ft-preview .special").first.inner_text() == "<|im_start|>"
    preview = page.locator("#ft-preview").inner_text()
    assert "Loss on every token" in preview and "learns to stop there" in preview
    assert page.locator("#ft-preview .loss").count() > 10  # every token underlined: it counts
    page.locator("#ft-preview-code-panel").get_by_text("Show the code · download").click()
    page.locator('#ft-preview-downloads [aria-label="finetune-preview-tokens.csv"]').wait_for(timeout=TIMEOUT)
    # The editor draws only the lines in view: the stamp at the top says what the code reproduces.
    assert (
        "# Fine-tuning data preview and plan, as LLM Lab showed it."
        in page.locator("#ft-preview-code").inner_text()
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#ft-preview").screenshot(path=str(ARTIFACTS / "finetune_preview.png"))

    page.locator("#ft-start").click()
    page.wait_for_function(f"{POINTS} >= 1", timeout=TIMEOUT)
    first = page.evaluate(POINTS)
    page.wait_for_function(f"{POINTS} > {first}", timeout=TIMEOUT)  # the curve grows while it trains
    assert "Running" in page.locator("#ft-status").inner_text()
    assert "step" in page.locator("#ft-progress").inner_text()
    assert "trainable params: 2,442,240" in page.locator("#ft-logs textarea").input_value()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "finetune_running.png"), full_page=True)

    page.locator("#ft-cancel").click()
    page.wait_for_function(
        "() => document.querySelector('#ft-status')?.innerText.includes('Cancelled')", timeout=30_000
    )
    assert page.locator("#ft-bar").get_attribute("data-status") == "cancelled"
    assert not page.outside_requests and not page.script_errors
