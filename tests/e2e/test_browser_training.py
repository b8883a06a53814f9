"""A reviewer retrains the head and runs a batch job from the browser; a real worker does the work."""

import numpy as np
import pytest
from playwright.sync_api import expect

from labeling.roles import role_group
from tests.helpers import log_in
from tests.labeling.factories import EMBEDDING_DIM, predicted_image

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def reviewer(django_user_model):
    user = django_user_model.objects.create_user("rita", password="rita-password-1")
    user.groups.add(role_group("reviewer"))
    return user


def test_a_reviewer_retrains_the_head_and_predicts_the_unlabelled_images(
        live_server, page, training_env, worker_factory, label_images, reviewer, species):
    worker_factory(training_env)
    label_images({"cat": 12, "dog": 12, "llama": 12})
    rng = np.random.default_rng(1)
    for _ in range(5):  # unlabelled, with stored features
        predicted_image(version=species, embedding=np.abs(rng.normal(0, 1, EMBEDDING_DIM)))
    log_in(page, live_server.url, "rita", "rita-password-1")

    page.goto(f"{live_server.url}/training/")
    page.click("button[value=head]")
    expect(page.locator("#train-message")).to_contain_text("queued")
    # The runs table updates itself; when the run has finished the page reloads its versions.
    try:
        expect(page.locator("#runs tr[data-status=succeeded]")).to_have_count(1, timeout=180_000)
    except AssertionError:
        print("runs table:", page.inner_text("#runs"), page.url)
        raise
    page.wait_for_load_state()
    row = page.locator("#versions tr", has_text="head-")
    expect(row).to_contain_text("production", timeout=20_000)
    expect(page.locator("#production")).to_contain_text("head-")

    row.locator("a").click()
    expect(page.locator("#confusion")).to_be_visible()
    expect(page.locator("#gate")).to_contain_text("llama")
    expect(page.locator("#per-class")).to_contain_text("dog")

    page.goto(f"{live_server.url}/jobs/")
    page.click("#job-unlabelled button")
    page.wait_for_url("**/jobs/*/")
    expect(page.locator("#job-progress em")).to_contain_text("done: 5 of 5 images", timeout=120_000)
    expect(page.locator("#job-summary")).to_be_visible()
    expect(page.locator("#lowest tr")).to_have_count(6)  # a header and the five images
