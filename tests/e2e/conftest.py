"""Browser fixtures: Debian's Chromium driven by Playwright (its own browser download can't work here)."""

import os
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import start_worker, stop_worker

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # live_server + sync Playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    # Printed on failure by pytest: what the page itself complained about.
    page.on("console", lambda m: print(f"console {m.type}: {m.text}"))
    page.on("pageerror", lambda e: print(f"page error: {e}"))
    yield page
    page.close()



@pytest.fixture
def worker_factory(settings, media_dir, tmp_path):
    """start(env, pool=..., queues=None) -> a worker process on fresh queues (or the given ones),
    which this test's settings then send to; stopped at the end of the test."""
    started = []

    def start(env: dict | None = None, *, pool: str = "prefork", queues: dict | None = None):
        if queues is None:
            suffix = uuid.uuid4().hex[:8]
            queues = {"INFERENCE_QUEUE": f"e2e-inference-{suffix}", "TRAINING_QUEUE": f"e2e-training-{suffix}"}
        for name, value in queues.items():
            setattr(settings, name, value)
        log_dir = tmp_path / f"worker-{len(started)}"
        log_dir.mkdir()
        process = start_worker(queues=queues, log_dir=log_dir, media_dir=media_dir, env=env, pool=pool)
        process.queues = queues
        started.append(process)
        return process

    yield start
    for process in started:
        stop_worker(process)


@pytest.fixture
def training_env(settings, tmp_path):
    """Settings shared by this process and the worker it starts."""
    env = {
        "MODELS_ROOT": str(tmp_path / "models"),
        "EMBEDDING_CACHE_DIR": str(tmp_path / "embeddings"),
        "TRAINING_MIN_PER_CLASS": "3",
        "PROMOTION_MIN_TEST_IMAGES": "1",
        "TORCH_NUM_THREADS": "1",
    }
    settings.MODELS_ROOT = Path(env["MODELS_ROOT"])
    settings.EMBEDDING_CACHE_DIR = Path(env["EMBEDDING_CACHE_DIR"])
    settings.TRAINING_MIN_PER_CLASS = 3
    settings.PROMOTION_MIN_TEST_IMAGES = 1
    return env
