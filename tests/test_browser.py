"""The tokenizer tab in a real browser (Debian's chromium through Playwright), as a reader uses it."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 60_000


@pytest.fixture
def page(open_page, lab_server):
    return open_page(lab_server, wait_for="#token-columns .col .toks")


def column(page, name: str):
    return page.locator(f'#token-columns .col[data-tokenizer="{name}"]')


def tokens_of(page, name: str) -> list[str]:
    return column(page, name).locator(".toks .t").all_inner_texts()


def set_text(page, text: str) -> None:
    page.locator("#tok-text textarea").fill(text)
    page.locator("#tok-run").click()


def test_preset_shows_every_tokenizer_column_with_the_books_tokens(page):
    from lab import tokens

    names = page.locator("#token-columns .col").evaluate_all("els => els.map(e => e.dataset.tokenizer)")
    assert names == tokens.PRESET
    gpt2 = tokens_of(page, "gpt2")
    assert [t for t in gpt2 if t in ("·CAP", "ITAL", "IZ", "ATION")] == ["·CAP", "ITAL", "IZ", "ATION"]
    assert "<F0 9F>" in gpt2  # the emoji's byte pieces are shown as bytes
    assert "[UNK]" in tokens_of(page, "bert-base-uncased")
    cased = column(page, "bert-base-cased")
    assert "Not available here" in cased.inner_text()
    assert "hf download bert-base-cased" in cased.inner_text()
    assert page.outside_requests == []  # nothing from a CDN: the page works offline


def test_hovering_a_byte_piece_names_the_character_it_belongs_to(page):
    piece = column(page, "gpt2").locator(".t.byte").first
    assert "part of '🎵'" in piece.get_attribute("title")


def test_typed_text_is_tokenized_and_the_address_shares_it(page, browser, lab_server):
    page.locator("#tok-names label").filter(has_text="bert-base-cased").click()  # the choice is shared too
    set_text(page, "Hello world")
    page.wait_for_function(
        "() => document.querySelector('#token-columns .col[data-tokenizer=\"gpt2\"] .toks')"
        "?.innerText.includes('world')",
        timeout=TIMEOUT,
    )
    assert tokens_of(page, "gpt2") == ["Hello", "·world"]
    page.wait_for_function("() => location.search.includes('text=Hello')", timeout=TIMEOUT)
    shared = page.url
    assert "bert-base-uncased" in shared and "bert-base-cased" not in shared
    shown = page.locator("#token-columns .col").evaluate_all("els => els.map(e => e.dataset.tokenizer)")
    other = browser.new_page()
    try:
        other.goto(shared)
        other.wait_for_function(
            "() => document.querySelector('#tok-text textarea')?.value === 'Hello world'", timeout=TIMEOUT
        )
        other.wait_for_function(
            "() => document.querySelector('#token-columns .col[data-tokenizer=\"gpt2\"] .toks')"
            "?.innerText.includes('world')",
            timeout=TIMEOUT,
        )
        columns = other.locator("#token-columns .col").evaluate_all(
            "els => els.map(e => e.dataset.tokenizer)"
        )
        assert columns == shown and "bert-base-cased" not in columns
        cased = other.locator("#tok-names label").filter(has_text="bert-base-cased").locator("input")
        assert not cased.is_checked()
        assert tokens_of(other, "gpt2") == ["Hello", "·world"]
    finally:
        other.close()


def test_text_over_the_cap_shows_a_message_and_the_page_keeps_working(page):
    set_text(page, "a" * 20_001)
    error = page.locator(".toast-body").filter(has_text="at most 20,000")
    error.first.wait_for(timeout=TIMEOUT)
    set_text(page, "still working")
    page.wait_for_function(
        "() => document.querySelector('#token-columns .col[data-tokenizer=\"gpt2\"] .toks')"
        "?.innerText.includes('working')",
        timeout=TIMEOUT,
    )


def test_token_ids_toggle_and_whitespace_glyphs(page):
    set_text(page, "a\tb\nc  d")
    page.wait_for_function(
        "() => document.querySelector('#token-columns .col[data-tokenizer=\"gpt2\"] .toks')"
        "?.innerText.includes('→')",
        timeout=TIMEOUT,
    )
    assert column(page, "gpt2").locator(".id").count() == 0
    page.locator("#tok-show-ids input").check()
    page.wait_for_function(
        "() => document.querySelectorAll('#token-columns .col[data-tokenizer=\"gpt2\"] .id').length > 0",
        timeout=TIMEOUT,
    )
    ids = column(page, "gpt2").locator(".id").all_inner_texts()
    assert ids[0] == "64"  # 'a' in GPT-2's vocabulary


def test_adding_a_bad_hub_id_explains_and_a_good_one_adds_a_column(page):
    page.locator("#tok-hub-id textarea, #tok-hub-id input").first.fill("not an id!!")
    page.locator("#tok-add").click()
    page.locator(".toast-body").filter(has_text="is not a Hugging Face model id").first.wait_for(
        timeout=TIMEOUT
    )
    page.locator("#tok-hub-id textarea, #tok-hub-id input").first.fill("someone/private-model")
    page.locator("#tok-add").click()
    column(page, "someone/private-model").wait_for(timeout=TIMEOUT)
    assert "Not available here" in column(page, "someone/private-model").inner_text()


def test_boundaries_and_chat_template_views(page):
    page.get_by_text("Where do two tokenizers cut differently?").click()
    page.locator("#tok-compare").click()
    page.locator("#token-boundaries .legend").wait_for(timeout=TIMEOUT)
    assert "only GPT-2" in page.locator("#token-boundaries").inner_text()
    page.locator("#tok-boundaries-code-panel").get_by_text("Show the code · download").click()
    page.locator('#tok-boundaries-downloads [aria-label="boundaries-boundaries.csv"]').wait_for(
        timeout=TIMEOUT
    )
    assert "tokens.boundaries(first, second)" in page.locator("#tok-boundaries-code").inner_text()
    page.get_by_text("Chat templates: what a chat model really reads").click()
    page.locator("#tok-chat").click()
    page.locator('#chat-template .col[data-tokenizer="microsoft/Phi-3-mini-4k-instruct"]').wait_for(
        timeout=TIMEOUT
    )
    specials = page.locator("#chat-template .t.special").all_inner_texts()
    assert "<|user|>" in specials and "<|im_start|>" in specials
    page.locator("#tok-chat-code-panel").get_by_text("Show the code · download").click()
    page.locator('#tok-chat-downloads [aria-label="chat-template-tokens.csv"]').wait_for(timeout=TIMEOUT)


def test_system_panel_lists_the_loaded_tokenizers(page):
    page.get_by_text("System: loaded models, memory and queues").click()  # opening it refreshes it
    page.wait_for_function(
        "() => document.querySelector('#system-cache')?.innerText.includes('gpt2#tokenizer')", timeout=TIMEOUT
    )
    assert "Models run on" in page.get_by_text("Models run on").first.inner_text()


def test_a_tokenizer_still_downloading_does_not_hold_back_the_others(page, monkeypatch):
    """A slow Hub download (stood in for by a gate) shows as "downloading"; the rest show at once."""
    import threading

    from lab import tokens

    gate, real = threading.Event(), tokens.tokenize

    def tokenize(text, name, path=None):
        if name == "gpt2":
            gate.wait(60)
        return real(text, name, path)

    monkeypatch.setattr(tokens, "needs_download", lambda name: name == "gpt2")
    monkeypatch.setattr(tokens, "tokenize", tokenize)
    try:
        set_text(page, "Downloading hello world")
        column(page, "gpt2").filter(has_text="Downloading from the Hugging Face Hub").wait_for(
            timeout=TIMEOUT
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('#token-columns .col[data-tokenizer=\"Xenova/gpt-4\"] .t')]"
            ".some(t => t.innerText.includes('Down'))",
            timeout=TIMEOUT,
        )
    finally:
        gate.set()
    column(page, "gpt2").locator(".toks .t").first.wait_for(timeout=TIMEOUT)
    assert "from the Hugging Face Hub" not in column(page, "gpt2").inner_text()
