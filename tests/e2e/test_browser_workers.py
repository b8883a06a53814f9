"""Real workers announce themselves; the training page shows who serves the training queue and asks
before a fine-tune that would run on a CPU."""

import pytest
import torch
from playwright.sync_api import expect

from classifier.models import TrainingRun, WorkerNode
from labeling.roles import role_group
from tests.conftest import stop_worker
from tests.helpers import log_in, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

# A fast heartbeat, and CPU training even where this machine has a GPU: the page must ask.
WORKER_ENV = {"WORKER_HEARTBEAT_S": "1", "TRAINING_DEVICE": "cpu"}


@pytest.fixture
def reviewer(django_user_model):
    user = django_user_model.objects.create_user("rita", password="rita-password-1")
    user.groups.add(role_group("reviewer"))
    return user


def row_of(process) -> WorkerNode:
    """The worker's own row (it serves exactly this test's queues)."""
    queues = sorted(process.queues.values())
    return wait_for(lambda: next((n for n in WorkerNode.objects.all() if n.queues == queues), None),
                    timeout=60, what="the worker's row")


def test_a_real_worker_announces_its_queues_device_and_backend_and_says_goodbye(worker_factory):
    process = worker_factory(WORKER_ENV)

    node = row_of(process)

    assert node.device == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")
    assert node.training_device == "cpu" and node.backend in ("onnxruntime", "torch")
    assert node.pid and node.stopped is None
    stop_worker(process)
    node.refresh_from_db()
    assert node.stopped is not None  # a warm shutdown marks it gone at once


@pytest.mark.browser
def test_the_training_page_shows_the_workers_and_asks_before_a_cpu_finetune(
        live_server, page, worker_factory, label_images, reviewer):
    process = worker_factory(WORKER_ENV)
    hostname = row_of(process).hostname
    label_images({"cat": 15, "dog": 15, "llama": 15})
    log_in(page, live_server.url, "rita", "rita-password-1")

    page.goto(f"{live_server.url}/training/")
    expect(page.locator(f'#workers tr[data-hostname="{hostname}"]')).to_contain_text(process.queues["TRAINING_QUEUE"])
    expect(page.locator("#training-served")).to_contain_text(hostname)
    finetune = page.locator("button[value=finetune]")
    expect(finetune).to_contain_text("no GPU: asks first")

    # No CUDA worker: the page asks, with the estimate, and a "no" starts nothing.
    finetune.click()
    confirm = page.locator("#cpu-confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text(f"served by {hostname} on the CPU")
    expect(confirm).to_contain_text("Predictions will not wait for it")
    expect(confirm).to_contain_text("min of one CPU core")
    page.click("#cpu-confirm-cancel")
    expect(confirm).to_be_hidden()
    expect(page.locator("#train-message")).to_have_text("Not started.")
    assert not TrainingRun.objects.exists()

    # The worker stops: the page's table follows (nothing serves the training queue now).
    stop_worker(process)
    expect(page.locator(f'#workers tr[data-hostname="{hostname}"]')).to_have_count(0, timeout=20_000)
    expect(page.locator("#training-served")).to_contain_text("No worker serves the training queue")

    finetune.click()
    expect(confirm).to_contain_text("no worker serves the training queue now")
    page.click("#cpu-confirm-start")
    expect(page.locator("#train-message")).to_contain_text("queued")
    expect(confirm).to_be_hidden()
    expect(page.locator("#runs tr[data-status=queued]")).to_contain_text("finetune")
    assert TrainingRun.objects.get().mode == "finetune"
