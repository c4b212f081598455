"""Shared fixtures. No test touches the network: the Hub is switched off before anything is imported."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("LAB_CACHE_DIR", str(Path(tempfile.gettempdir()) / "llm-lab-test-cache"))
os.environ.pop("LAB_MODEL_DIR", None)
os.environ.pop("LAB_CLASSROOM", None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def local_settings(**changes: object) -> object:
    """The environment's settings, bound to a free port on 127.0.0.1."""
    import dataclasses

    from lab.config import Settings

    return dataclasses.replace(
        Settings.from_env(), server_name="127.0.0.1", server_port=free_port(), **changes
    )


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
