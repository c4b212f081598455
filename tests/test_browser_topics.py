"""The topic tab in chromium: fit the Wikipedia corpus, find the topic table, the documents map and the
interactive datamapplot map, which must load nothing from the internet."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from tests.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIMEOUT = 600_000  # the first fit compiles UMAP: a minute on two idle cores, minutes on a busy or fresh one


@pytest.fixture(scope="module")
def topics_server():
    import gradio as gr

    import app
    from tabs import topics as topics_tab
    from tests.conftest import local_settings

    settings = local_settings()
    with gr.Blocks(title="LLM Lab · topics") as demo:
        topics_tab.build(demo, settings)
    yield app.serve(demo, settings, block=False)
    demo.close()


@pytest.fixture
def page(browser, topics_server):
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    outside: list[str] = []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:", "about:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.outside_requests = outside
    page.script_errors = errors
    page.goto(topics_server)
    yield page
    context.close()


def test_fit_the_default_corpus_then_table_map_and_offline_datamap(page):
    page.locator("#topics-fit").click()
    page.wait_for_function(
        "() => document.querySelector('#topics-summary')?.innerText.includes('topics in 10,033 documents')",
        timeout=TIMEOUT,
    )
    table = page.locator("#topics-table")
    assert table.get_by_text("-1", exact=True).count() >= 1  # the outliers' row
    assert "NMI" in page.locator("#topics-agreement").inner_text()
    page.locator("#topics-map .js-plotly-plot").wait_for(timeout=TIMEOUT)
    assert "documents shown" in page.locator("#topics-map").inner_text()
    page.locator("#topics-map-code-panel").get_by_text("Show the code · download").click()
    page.locator('#topics-map-downloads [aria-label="topics-documents-map.json"]').wait_for(timeout=TIMEOUT)
    # The editor draws only the lines in view: the fit's stamp comes first, the map's lines last.
    assert "# Topic model, as LLM Lab showed it." in page.locator("#topics-map-code").inner_text()

    page.locator("#topics-query input, #topics-query textarea").first.fill("football")
    page.locator("#topics-search").click()
    page.wait_for_function(
        "() => /sport|olympic|football/.test(document.querySelector('#topics-found')?.innerText || '')",
        timeout=TIMEOUT,
    )

    page.get_by_role("tab", name="Stability").click()
    page.locator("#topics-sweep-run").click()  # one HDBSCAN per value on the fit's cached UMAP
    page.wait_for_function(
        "() => document.querySelector('#topics-sweep-text')?.innerText.includes('this run uses')",
        timeout=TIMEOUT,
    )
    page.locator("#topics-sweep .js-plotly-plot").wait_for(timeout=TIMEOUT)
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#topics-sweep").screenshot(path=str(ARTIFACTS / "topics_stability.png"))

    page.get_by_role("tab", name="DataMapPlot").click()
    page.locator("#topics-datamap-run").click()
    frame = page.frame_locator("#topics-datamap iframe")
    frame.locator("canvas").first.wait_for(timeout=120_000)
    assert page.evaluate(
        "() => document.querySelector('#topics-datamap iframe').contentWindow.deck !== undefined"
    )  # deck.gl ran from the inlined copy
    assert "Built in" in page.locator("#topics-datamap-status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "topics_tab.png"), full_page=True)
    assert page.outside_requests == [] and page.script_errors == []
