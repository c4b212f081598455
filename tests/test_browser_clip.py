"""The CLIP tab as its users reach it: its API through gradio_client, and the page in a real browser.

The tab is served on its own (``tabs.clip_search.build`` in a fresh ``gr.Blocks``, launched by
``app.serve``), with the tiny random open_clip model of ``lab.testing`` in ``LAB_MODEL_DIR`` under the
default model's id, so the default choice loads it through the catalog exactly as it would load the real
ViT-B/32. Random weights check the plumbing, not CLIP's quality: the tests' names say ``tiny_random_clip``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from lab import catalog, clip, testing
from lab.cache import CACHE
from tests.helpers import BOOK_IMAGES, local_settings

pytestmark = pytest.mark.slow

TIMEOUT = 60_000
BOOK = BOOK_IMAGES


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CLIP tab alone, served as the app serves it, with the tiny model standing in for ViT-B/32."""
    import gradio as gr

    import app
    from tabs import clip_search

    models_dir = tmp_path_factory.mktemp("lab-models")
    testing.write_open_clip(models_dir / catalog.slug(clip.DEFAULT_MODEL))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_MODEL_DIR", str(models_dir))
        patch.setenv("LAB_CACHE_DIR", str(tmp_path_factory.mktemp("lab-cache")))
        _forget_clip_models()
        settings = local_settings()
        with gr.Blocks(title="LLM Lab: CLIP") as demo, gr.Tabs(), gr.Tab("CLIP search · ch. 9", id="clip"):
            clip_search.build(demo, settings)
        url = app.serve(demo, settings, block=False)
        try:
            yield url
        finally:
            demo.close()
            _forget_clip_models()


def _forget_clip_models() -> None:
    """Drop the weights earlier tests loaded under the same ids from another LAB_MODEL_DIR.

    The tab's described models and default indexes need no reset: each ``build`` has its own
    :class:`lab.clip.Galleries`.
    """
    for key in CACHE.loaded():
        if "#clip" in key:
            CACHE.evict(key)


@pytest.fixture(scope="module")
def client(clip_server: str):
    from gradio_client import Client

    return Client(clip_server, verbose=False)


# -- the API -----------------------------------------------------------------------------------------


def test_the_tab_publishes_exactly_its_three_api_names(client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/clip_search", "/clip_zero_shot", "/clip_matrix"]


def test_tiny_random_clip_search_api_ranks_the_default_gallery(client) -> None:
    found = client.predict("a puppy playing in the snow", 5, api_name="/clip_search")
    assert [r["rank"] for r in found] == [1, 2, 3, 4, 5]
    names = {name for name, _ in clip.default_gallery()}
    assert {r["id"] for r in found} <= names
    cosines = [r["cosine"] for r in found]
    assert cosines == sorted(cosines, reverse=True)
    with pytest.raises(Exception, match="Type what to search for"):
        client.predict("  ", api_name="/clip_search")


def test_tiny_random_clip_zero_shot_api_sums_to_one_and_refuses_duplicate_labels(client) -> None:
    from gradio_client import handle_file

    result = client.predict(
        handle_file(str(BOOK / "puppy.png")), ["puppy", "cat", "car"], api_name="/clip_zero_shot"
    )
    assert list(result) == ["puppy", "cat", "car"] and sum(result.values()) == pytest.approx(1.0)
    with pytest.raises(Exception, match="puppy appears more than once"):
        client.predict(handle_file(str(BOOK / "puppy.png")), ["puppy", "puppy"], api_name="/clip_zero_shot")
    with pytest.raises(Exception, match="Send the image as a file"):
        client.predict("/etc/hostname", ["a", "b"], api_name="/clip_zero_shot")


def test_tiny_random_clip_matrix_api_defaults_to_the_books_three_images_and_captions(client) -> None:
    from gradio_client import handle_file

    result = client.predict(api_name="/clip_matrix")
    assert result["images"] == list(clip.BOOK_CAPTIONS)
    assert result["captions"] == list(clip.BOOK_CAPTIONS.values())
    assert len(result["matrix"]) == 3 and all(len(row) == 3 for row in result["matrix"])
    captions = ["a pixelated image of a cute cat", "a car"]
    mine = client.predict(captions, [handle_file(str(BOOK / "cat.png"))], api_name="/clip_matrix")
    assert mine["images"] == ["image 1"] and len(mine["matrix"][0]) == 2
    assert mine["matrix"][0][0] == pytest.approx(result["matrix"][1][1], abs=1e-5)  # the same pair


def test_a_model_without_weights_explains_how_to_get_it_and_the_server_keeps_serving(client) -> None:
    with pytest.raises(Exception, match="hf download openai/clip-vit-base-patch32"):
        client.predict("a cat", 3, clip.BOOK_MODEL, api_name="/clip_search")
    assert len(client.predict("a cat", 3, api_name="/clip_search")) == 3


# -- the page ----------------------------------------------------------------------------------------


@pytest.fixture
def page(open_page, clip_server) -> object:
    return open_page(clip_server, wait_for="#clip-status")


def _wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.innerText.includes(text)",
        arg=[selector, text],
        timeout=TIMEOUT,
    )


@pytest.mark.browser
def test_tiny_random_clip_text_search_shows_result_images_and_a_click_searches_by_image(page) -> None:
    _wait_for_text(page, "#clip-status", "weights from LAB_MODEL_DIR")
    _wait_for_text(page, "#clip-tokens", "<|startoftext|>")  # the panel fills at once, weights or not
    page.locator("#clip-query textarea, #clip-query input").first.fill("a cat on a sofa")
    page.locator("#clip-search").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#clip-results img').length === 8", timeout=TIMEOUT
    )
    sizes = page.locator("#clip-results img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(width > 0 for width in sizes)  # the images really loaded
    _wait_for_text(page, "#clip-tokens", "sofa</w>")
    table = page.locator("#clip-results-table").inner_text()
    assert "Top 8 of 17 images" in table and "probability" in table
    assert "Embeddings have 16 dimensions" in page.locator("#clip-facts").inner_text()
    # A click on a picture of the gallery searches with it: the identical image comes first, at cosine 1.
    page.locator("#clip-gallery-all button").filter(has_text="coffee.jpg").first.click()
    page.wait_for_function(
        "() => document.querySelector('#clip-results-table tbody tr')?.innerText.includes('coffee.jpg')",
        timeout=TIMEOUT,
    )
    assert "1.0000" in page.locator("#clip-results-table tbody tr").first.inner_text()
    assert page.outside_requests == []  # nothing from a CDN: the tab works offline


@pytest.mark.browser
def test_tiny_random_clip_zero_shot_chart_and_the_books_matrix(page) -> None:
    page.get_by_role("tab", name="Zero-shot labels").click()
    page.locator("#clip-classify").click()
    _wait_for_text(page, "#clip-zs-table", "a photo of a puppy.")
    page.get_by_role("tab", name="Similarity matrix (the book)").click()
    page.locator("#clip-matrix-run").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#clip-heat td.cell').length === 9", timeout=TIMEOUT
    )
    assert page.locator("#clip-heat img").count() == 3
    # Its code and downloads, beside it: the heat map as PNG and SVG, the matrix as CSV.
    page.locator("#clip-matrix-code-panel").get_by_text("Show the code · download").click()
    page.locator('#clip-matrix-downloads [aria-label="clip-matrix-heatmap.svg"]').wait_for(timeout=TIMEOUT)
    assert page.locator('#clip-matrix-downloads [aria-label="clip-matrix-matrix.csv"]').count() == 1
    assert "clip.similarity_matrix(IMAGES, CAPTIONS, model)" in page.locator("#clip-matrix-code").inner_text()
    page.get_by_role("tab", name="Zero-shot labels").click()
    page.locator("#clip-labels textarea").fill("cat\ncat")
    page.locator("#clip-classify").click()
    page.locator(".toast-body").filter(has_text="cat appears more than once").first.wait_for(timeout=TIMEOUT)


@pytest.mark.browser
def test_an_upload_with_a_bad_file_adds_the_good_ones_and_names_the_bad(page, tmp_path: Path) -> None:
    archive = tmp_path / "trip.zip"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 200)).save(buffer, "PNG")
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("trip/lake.png", buffer.getvalue())
        zipped.writestr("trip/readme.txt", "not a picture")
    page.get_by_role("tab", name="Gallery: add your images").click()
    page.locator("#clip-uploads input[type=file]").set_input_files([str(archive), str(BOOK / "car.png")])
    page.locator("#clip-uploads").get_by_text("trip.zip").wait_for(timeout=TIMEOUT)
    page.locator("#clip-add").click()
    _wait_for_text(page, "#clip-upload-status", "the gallery now holds 19 images")
    status = page.locator("#clip-upload-status").inner_text()
    assert "Added 2 images" in status and "trip/readme.txt is not an image" in status
    assert page.locator("#clip-gallery-all").get_by_text("trip/lake.png").count() == 1
    assert page.locator("#clip-gallery-all").get_by_text("car (2).png").count() == 1


@pytest.mark.browser
def test_a_model_without_weights_says_what_to_fetch_and_the_tokens_still_work(page) -> None:
    page.locator("#clip-model input").first.click()
    page.get_by_role("option", name="CLIP ViT-B/32 (OpenAI) · openai/clip-vit-base-patch32").click()
    _wait_for_text(page, "#clip-status", "Not available here")
    status = page.locator("#clip-status").inner_text()
    assert "605 MB" in status and "hf download openai/clip-vit-base-patch32" in status
    page.locator("#clip-query textarea, #clip-query input").first.fill("a rocket launch")
    page.locator("#clip-search").click()
    page.locator(".toast-body").filter(has_text="hf download openai/clip-vit-base-patch32").first.wait_for(
        timeout=TIMEOUT
    )
    _wait_for_text(page, "#clip-tokens", "rocket</w>")
