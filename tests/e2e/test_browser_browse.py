"""A reviewer filters the data browser, selects images with click and shift-click, and labels
them in bulk, in headless Chromium."""

import pytest
from playwright.sync_api import expect

from labeling.models import Annotation
from labeling.roles import role_group
from tests.helpers import log_in
from tests.labeling.factories import predicted_image, with_margin

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]


@pytest.fixture
def reviewer_with_password(django_user_model):
    user = django_user_model.objects.create_user("rhea", password="rhea-password-1")
    user.groups.add(role_group("reviewer"))
    return user


def test_filter_shift_select_and_label_in_bulk(live_server, species, reviewer_with_password, page, tmp_path):
    dogs = [predicted_image(version=species, probs=with_margin(species, 0.1 + 0.1 * n, top="dog")) for n in range(6)]
    cats = [predicted_image(version=species, probs=with_margin(species, 0.3, top="cat", second="dog"))
            for _ in range(2)]
    log_in(page, live_server.url, "rhea", "rhea-password-1")

    page.goto(f"{live_server.url}/images/")
    expect(page.locator("#grid .tile")).to_have_count(len(dogs) + len(cats))
    page.fill("#browse-filters input[name=predicted]", "dog")
    page.select_option("#browse-filters select[name=sort]", "margin")
    page.click("#browse-filters button[type=submit]")
    expect(page.locator("#grid .tile")).to_have_count(len(dogs))
    assert "predicted=dog" in page.url and "sort=margin" in page.url  # bookmarkable
    assert "label=" not in page.url  # filters left empty stay out of the URL

    tiles = page.locator("#grid .tile")
    tiles.nth(1).click()
    tiles.nth(4).click(modifiers=["Shift"])
    expect(page.locator("#grid .tile.selected")).to_have_count(4)
    expect(page.locator("#selected-count")).to_have_text("4 selected")
    chosen = [int(tiles.nth(i).get_attribute("data-id")) for i in range(1, 5)]
    page.select_option("#bulk-label", "cat")
    page.click("#bulk-label-button")
    expect(page.locator("#bulk-message")).to_contain_text("Labelled 4 images cat")
    page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)

    written = Annotation.objects.filter(source__startswith="bulk ")
    assert sorted(written.values_list("image_id", flat=True)) == sorted(chosen)
    assert set(written.values_list("label", "role")) == {("cat", "reviewer")}
    by_margin = sorted(dogs, key=lambda im: im.summary.margin)
    assert sorted(chosen) == sorted(im.id for im in by_margin[1:5])  # the range between the two clicks
    page.goto(f"{live_server.url}/images/?label=cat")
    expect(page.locator("#grid .tile")).to_have_count(4)
