"""Shared fixtures. No test touches the network: the Hub is switched off before anything is imported."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("LAB_CACHE_DIR", str(Path(tempfile.gettempdir()) / "llm-lab-test-cache"))
os.environ.pop("LAB_MODEL_DIR", None)
os.environ.pop("LAB_CLASSROOM", None)

import pytest  # noqa: E402

from tests.helpers import ARTIFACTS, ROOT, free_port, is_outside, local_settings  # noqa: E402, F401


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    """Empty the process-wide model cache before and after a test that counts loads."""
    from lab.cache import CACHE

    CACHE.clear()
    yield
    CACHE.clear()


@pytest.fixture(scope="session")
def lab_server() -> Iterator[str]:
    """The real app, launched as ``python app.py`` launches it, on a free port of 127.0.0.1."""
    import app

    yield app.serve(app.demo, local_settings(), block=False)
    app.demo.close()


# -- tiny random-weight models, written once per session (read-only: copy one before changing it) --


def _tiny(writer: str, name: str) -> Any:
    """A session fixture: the folder ``lab.testing.<writer>`` writes, built on first use."""

    @pytest.fixture(scope="session")
    def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
        from lab import testing

        return getattr(testing, writer)(tmp_path_factory.mktemp("tiny") / name)

    return folder


tiny_llama = _tiny("write_llama_causal_lm", "tiny-random-llama")
tiny_bert = _tiny("write_bert_encoder", "tiny-random-bert")
tiny_sentence = _tiny("write_sentence_encoder", "tiny-random-sentence")
tiny_clip = _tiny("write_open_clip", "tiny-random-clip")
tiny_blip2 = _tiny("write_blip2", "tiny-random-blip2")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium driven by Playwright (headless, no network beyond loopback)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.fail(
            f"{chromium} is missing: `make test` installs Debian's chromium (apt-get install chromium)"
        )
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield instance
        instance.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open a URL in a fresh browser context: ``page = open_page(url, wait_for="#selector")``.

    Requests that would leave this machine are blocked and listed in ``page.outside_requests`` (a lab page
    must work offline); script errors are listed in ``page.script_errors``. Contexts close after the test.
    """
    contexts: list[Any] = []

    def open_(url: str, *, wait_for: str | None = None, width: int = 1400, height: int = 1000) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        outside: list[str] = []

        def only_local(route: Any) -> None:
            if is_outside(route.request.url):
                outside.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", only_local)
        page = context.new_page()
        page.outside_requests = outside
        page.script_errors = []
        page.on("pageerror", lambda error: page.script_errors.append(str(error)))
        page.goto(url)
        if wait_for:
            page.wait_for_selector(wait_for, timeout=90_000)
        return page

    yield open_
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep a screenshot of the page when a browser test fails (test-artifacts/<test>.png)."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and page is not None:
        ARTIFACTS.mkdir(exist_ok=True)
        with contextlib.suppress(Exception):  # the page may be gone; the failure itself is what matters
            page.screenshot(path=str(ARTIFACTS / f"{item.name}.png"), full_page=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests skip, with the reason, on a machine without CUDA (whatever -m selected them)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
