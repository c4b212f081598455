"""Share any view, follow one sentence, readable by everyone, in chromium against the whole lab.

A view's address opened in a second browser context (another reader) shows the same view, computed again;
links between tabs switch tab inside the page and carry their state; the palette switch is remembered;
axe-core (vendored, assets/js/axe) finds no serious or critical violation on any tab.
"""

from __future__ import annotations

import json

import pytest

from lab import paths
from tests.helpers import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 90_000
AXE = paths.JS / "axe" / "axe.min.js"
SMOLLM2 = "SmolLM2 135M instruct · HuggingFaceTB/SmolLM2-135M-Instruct"  # as the model menus name it
TAB_NAMES = {
    "tokenizers": "Tokenizers · ch. 2",
    "attention": "Attention & embeddings · ch. 2–3",
    "topics": "Topic modelling · ch. 5",
    "clip": "CLIP search · ch. 9",
    "vision-chat": "BLIP-2 chat · ch. 9",
    "finetune": "QLoRA fine-tune · ch. 12",
}


def ready(page):
    """The page has applied its address (the hidden link button is there and the tokenizer view drawn)."""
    page.locator("#token-columns .col .toks").first.wait_for(state="attached", timeout=TIMEOUT)
    return page


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
        arg=[selector, text],
        timeout=TIMEOUT,
    )


def shows_tab(page, tab_id: str) -> bool:
    """Wait until the lab's tab ``tab_id`` is the selected one (the address selects it as the page draws)."""
    page.wait_for_function(
        "id => document.querySelector(`#lab-tabs [role=tab][data-tab-id='${id}']`)"
        "?.getAttribute('aria-selected') === 'true'",
        arg=tab_id,
        timeout=TIMEOUT,
    )
    return True


def test_an_attention_view_opened_by_another_reader_is_the_same_view(open_page, lab_server):
    page = ready(open_page(lab_server))
    page.get_by_role("tab", name=TAB_NAMES["attention"]).click()
    page.locator("#att-model input").click()  # not the default model: the link must carry it
    page.get_by_role("option", name=SMOLLM2).click()
    page.locator("#att-text textarea").fill("Links carry the whole view.")
    page.locator("#att-run").click()
    page.frame_locator("#att-head-view iframe").locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    for slider, value in (("#att-layer", "2"), ("#att-head", "3")):
        box = page.locator(f"{slider} input[type=number]")
        box.fill(value)
        box.press("Enter")
        box.blur()
    wait_text(page, "#att-single", "layer 2 · head 3")
    page.wait_for_function("() => location.search.includes('att.head=3')", timeout=TIMEOUT)
    address = page.url
    assert "tab=attention" in address and "att.layer=2" in address and "att.text=Links" in address

    other = ready(open_page(address))  # a second browser context: no shared session or storage
    assert shows_tab(other, "attention")
    other.wait_for_function(
        "() => document.querySelector('#att-text textarea')?.value === 'Links carry the whole view.'",
        timeout=TIMEOUT,
    )
    wait_text(other, "#att-single", "layer 2 · head 3")
    assert other.locator("#att-model input").input_value() == SMOLLM2
    for slider, value in (("#att-layer", "2"), ("#att-head", "3")):
        assert other.locator(f"{slider} input[type=number]").input_value() == value
    assert other.url == address  # the address survives the page's load
    frame = other.frame_locator("#att-head-view iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    assert (
        frame.locator("#left .tok").all_inner_texts()
        == page.frame_locator("#att-head-view iframe").locator("#left .tok").all_inner_texts()
    )


def test_follow_a_sentence_tokenizer_to_attention_to_neighbours_and_logit_lens(open_page, lab_server):
    page = ready(open_page(lab_server))
    bert = page.locator('#token-columns .col[data-tokenizer="bert-base-uncased"]')
    bert.locator(".toks .t").nth(3).click()  # a token opens its text in the attention tab, same family
    page.wait_for_function("() => location.search.includes('tab=attention')", timeout=TIMEOUT)
    assert shows_tab(page, "attention")
    frame = page.frame_locator("#att-head-view iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    assert "MiniLM" in page.locator("#att-model input").input_value()
    assert page.locator("#att-text textarea").input_value().strip().startswith("English and CAPITALIZATION")

    # The keyboard reaches a token of the head view; Enter keeps it and offers its links.
    first = frame.locator("#left .tok").first
    first.focus()
    for _ in range(2):
        first.page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert frame.locator("#left .tok[aria-selected=true]").count() == 1
    frame.get_by_text("Embedding neighbours of").click()
    page.wait_for_function("() => location.search.includes('emb.token=')", timeout=TIMEOUT)
    wait_text(page, "#emb-neighbours", "input embeddings")  # "Closest to '…' in …'s input embeddings"
    neighbours = page.locator("#emb-neighbours").inner_text()
    other = ready(open_page(page.url))  # another reader opens the neighbours view
    wait_text(other, "#emb-neighbours", "input embeddings")
    assert other.locator("#emb-neighbours").inner_text() == neighbours

    page.get_by_role("tab", name="Attention", exact=True).click()
    frame.locator("body[data-ready='1']").wait_for(timeout=TIMEOUT)
    frame.locator("#left .tok").nth(2).click()
    frame.get_by_text("Logit lens up to").click()
    wait_text(page, "#fwd-lens", "layer 29")  # SmolLM2: the lens of the text up to that token
    assert page.locator("#fwd-prompt textarea").input_value().strip() == "English and"
    lens = page.locator("#fwd-lens").inner_text()
    other = ready(open_page(page.url))  # another reader opens the logit-lens view
    wait_text(other, "#fwd-lens", "layer 29")
    assert other.locator("#fwd-prompt textarea").input_value().strip() == "English and"
    assert other.locator("#fwd-model input").input_value() == SMOLLM2
    assert other.locator("#fwd-lens").inner_text() == lens


def test_a_topic_link_restores_every_setting_and_starts_the_fit(open_page, lab_server):
    link = "?tab=topics&top.corpus=wikipedia&top.n_neighbors=12&top.min_cluster_size=31&top.selection=leaf"
    page = ready(open_page(lab_server + link))
    assert shows_tab(page, "topics")
    page.wait_for_function(
        "() => document.querySelector('#topics-min-cluster-size input[type=number]')?.value === '31'",
        timeout=TIMEOUT,
    )
    assert page.locator("#topics-neighbors input[type=number]").input_value() == "12"
    assert page.locator("#topics-selection input[value=leaf]").is_checked()
    # The fit runs through the tab's own event (its progress shows); a 10,000-document UMAP is not this
    # test's business (test_browser_topics fits): cancel it.
    page.locator("#topics-summary .progress-text, #topics-summary .eta-bar, .progress-level").first.wait_for(
        timeout=TIMEOUT
    )
    page.locator("#topics-cancel").click()


def test_clip_and_blip2_links_restore_their_inputs(open_page, lab_server):
    link = (
        "?tab=clip&clip.model=openai%2Fclip-vit-base-patch32&clip.q=a+rocket+launch&clip.labels=rocket%0Acat"
        "&clip.k=4"
    )
    page = ready(open_page(lab_server + link))
    assert shows_tab(page, "clip")
    assert page.locator("#clip-query textarea").input_value() == "a rocket launch"
    assert page.locator("#clip-k input[type=number]").input_value() == "4"
    assert (
        page.locator("#clip-model input").input_value()
        == "CLIP ViT-B/32 (OpenAI) · openai/clip-vit-base-patch32"
    )
    wait_text(page, "#clip-tokens", "rocket")  # CLIP's tokens of the linked query, computed again
    page.get_by_role("tab", name="Zero-shot labels").click()
    assert page.locator("#clip-labels textarea").input_value() == "rocket\ncat"

    chat = ready(open_page(lab_server + "?tab=vision-chat&vc.image=car.png&vc.q=What+is+this%3F"))
    assert shows_tab(chat, "vision-chat")
    chat.wait_for_function(
        "() => (document.querySelector('#vc-image img')?.src || '').endsWith('/car.png')", timeout=TIMEOUT
    )
    # The image is set and its questions asked again through the model queue; without BLIP-2 weights here
    # (a link carries no local folder) the answers are not checked, only that the address survives the load.
    assert "vc.q=What+is+this%3F" in chat.url


def test_a_shared_fine_tune_run_shows_its_curve_and_answers_read_only(open_page, lab_server):
    from lab.finetune import share

    # A finished run's public part, as "Share the results" writes it (training one is test_finetune's job).
    folder = share.folder().parent / "runs-for-link-test"
    folder.mkdir(parents=True, exist_ok=True)
    share.record_comparison(folder, "Tell me about LLMs.", "base rambles", "tuned <b>answers</b>")
    snapshot = {"status": "done", "step": 3, "total_steps": 3, "losses": [[1, 2.5], [2, 2.0], [3, 1.5]],
                "method": "lora", "method_title": "LoRA", "base_model": "tiny"}  # fmt: skip
    code = share.publish(snapshot, folder)
    page = ready(open_page(f"{lab_server}?tab=finetune&ft.share={code}"))
    assert shows_tab(page, "finetune")
    wait_text(page, "#ft-status", "A shared run (read-only)")
    assert "loss 2.500 → 1.500" in page.locator("#ft-status").inner_text()
    page.wait_for_function(
        "() => document.querySelector('#ft-tuned textarea')?.value === 'tuned <b>answers</b>'",
        timeout=TIMEOUT,
    )
    assert page.locator("#ft-prompt textarea").input_value() == "Tell me about LLMs."

    bad = ready(open_page(f"{lab_server}?tab=finetune&ft.share={'0' * 32}&att.text=%3Cimg%20src=x%3E"))
    bad.locator(".toast-body").filter(has_text="not shared on this server").first.wait_for(timeout=TIMEOUT)
    assert bad.outside_requests == []


def test_the_palette_switch_recolours_tokens_and_is_remembered_after_a_reload(open_page, lab_server):
    page = ready(open_page(lab_server))
    token = page.locator('#token-columns .col[data-tokenizer="gpt2"] .toks .t.c1').first
    book = token.evaluate("t => getComputedStyle(t).backgroundColor")
    page.locator("#lab-palette").check()
    assert token.evaluate("t => getComputedStyle(t).backgroundColor") == "rgba(86, 180, 233, 0.55)" != book
    page.reload()
    ready(page)
    assert page.locator("#lab-palette").is_checked()
    assert page.evaluate("() => document.documentElement.dataset.palette") == "cb"
    assert page.locator(".t.c1").first.evaluate("t => getComputedStyle(t).backgroundColor") == (
        "rgba(86, 180, 233, 0.55)"
    )


def test_axe_finds_no_serious_or_critical_violation_on_any_tab(open_page, lab_server):
    page = ready(open_page(lab_server))
    found: dict[str, list[dict]] = {}
    for tab_id, name in TAB_NAMES.items():
        page.get_by_role("tab", name=name).click()
        page.wait_for_timeout(300)
        if tab_id == "attention":  # the head view and the model view drawn
            page.locator("#att-run").click()
            page.frame_locator("#att-head-view iframe").locator("body[data-ready='1']").wait_for(
                timeout=TIMEOUT
            )
        if not page.evaluate("() => Boolean(window.axe)"):
            page.add_script_tag(path=str(AXE))
        result = page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))"
        )
        if result:
            found[tab_id] = result
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "axe.json").write_text(json.dumps(found, indent=1))
    assert found == {}
