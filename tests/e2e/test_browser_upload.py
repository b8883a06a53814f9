"""A person's path through the product, in headless Chromium: log in, drop a photo, see it."""

import pytest
from playwright.sync_api import expect

from tests.helpers import demo_photo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker, pytest.mark.browser]

def test_it_shows_the_top_class_after_an_upload(live_server, celery_worker, species, alice, page, tmp_path):
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(f"{live_server.url}/accounts/login/?next=/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="What animal is this?")).to_be_visible()

    page.wait_for_selector("#dropzone[data-ready]", state="attached")  # the page's script is listening
    page.set_input_files("#file-input", str(demo_photo("dalmatian")))

    result = page.locator("#results .result").first
    expect(result).to_have_class("result done", timeout=120_000)
    expect(result.locator(".state")).to_contain_text("dalmatian")
    expect(result.locator("[data-testid=top-classes] li").first).to_contain_text("dalmatian")
    expect(page.locator("#batch-progress em")).to_have_text("1 of 1 done")
    page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)

    result.get_by_role("link", name="details").click()
    expect(page.locator("#verdict-title")).to_have_text("dalmatian")
    expect(page.locator("#status-line")).to_contain_text(species.name)
    page.screenshot(path=str(tmp_path / "detail.png"), full_page=True)
    assert (tmp_path / "detail.png").stat().st_size > 0


def test_it_explains_why_a_file_was_refused(live_server, celery_worker, species, alice, page, tmp_path):
    broken = tmp_path / "notes.jpg"
    broken.write_text("this is not a photo")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-password-1")
    page.click("button[type=submit]")

    page.wait_for_selector("#dropzone[data-ready]", state="attached")
    page.set_input_files("#file-input", str(broken))

    result = page.locator("#results .result").first
    expect(result).to_have_class("result failed")
    expect(result.locator(".state")).to_contain_text("not an image")
