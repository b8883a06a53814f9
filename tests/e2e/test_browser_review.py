"""An annotator works the review queue by keyboard alone, in headless Chromium."""

import time

import pytest
from playwright.sync_api import expect

from classifier import predictions, uploads
from labeling import services
from labeling.models import Annotation
from labeling.roles import role_group
from tests.helpers import demo_photo, log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser]

PHOTOS = [("dalmatian", 0), ("flamingo", 0), ("starfish", 0), ("llama", 0), ("dalmatian", 2), ("flamingo", 2)]


@pytest.fixture
def annotator(django_user_model):
    user = django_user_model.objects.create_user("dana", password="dana-password-1")
    user.groups.add(role_group("annotator"))
    return user


@pytest.fixture
def predicted_images(species, alice):
    ids = []
    for label, index in PHOTOS:
        path = demo_photo(label, index)
        image = uploads.image_upload(user=alice, filename=path.name, data=path.read_bytes()).image
        predictions.image_classify(image_id=image.id)
        ids.append(image.id)
    return ids


def current_image(page) -> str:
    return page.locator("#review").get_attribute("data-image")


def press_and_wait(page, key: str) -> str:
    """Press a key and wait until the page shows another image (or runs out)."""
    before = current_image(page)
    page.keyboard.press(key)
    page.wait_for_function(
        "before => { const r = document.getElementById('review');"
        " return r.dataset.state === 'empty' || (r.dataset.state === 'ready' && r.dataset.image !== before); }",
        arg=before,
    )
    return current_image(page)


def test_it_records_five_keyboard_decisions_with_undo_and_search(live_server, predicted_images, annotator, page,
                                                                  tmp_path):
    log_in(page, live_server.url, "dana", "dana-password-1")
    page.goto(f"{live_server.url}/review/")
    expect(page.locator("#review")).to_have_attribute("data-state", "ready")
    started = time.perf_counter()

    first = current_image(page)
    second = press_and_wait(page, "Enter")  # 1: accept the suggestion
    page.keyboard.press("2")  # 2: pick the second candidate...
    page.wait_for_function("id => document.getElementById('review').dataset.image !== id", arg=second)
    assert press_and_wait(page, "u") == second  # ...undo brings the same image back
    expect(page.locator("#review-message")).to_contain_text("Undone")
    third = press_and_wait(page, "1")  # 2 again: the first candidate
    page.keyboard.press("/")  # 3: search any class
    page.keyboard.type("llam")
    fourth = press_and_wait(page, "Enter")
    fifth = press_and_wait(page, "n")  # 4: not an animal
    press_and_wait(page, "a")  # 5: accept
    elapsed = time.perf_counter() - started
    page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

    decided = [int(first), int(second), int(third), int(fourth), int(fifth)]
    log = page.locator("#log li")
    expect(log).to_have_count(7)  # 5 decisions, the undone one and the undo
    print(f"5 keyboard decisions (+1 undone) in {elapsed:.1f}s: {5 * 60 / elapsed:.0f} decisions per minute")

    page.goto(f"{live_server.url}/images/{decided[1]}/")
    history = page.locator("#history li")
    expect(history).to_have_count(3)
    expect(history.nth(0)).to_have_class("undone")
    expect(history.nth(1)).to_contain_text("undid decision")
    expect(history.nth(2)).to_contain_text("dana (annotator)")

    page.goto(f"{live_server.url}/images/{decided[2]}/")
    expect(page.locator("#history li")).to_have_count(1)
    expect(page.locator("#history li").first).to_contain_text("llama")

    page.goto(f"{live_server.url}/images/{decided[3]}/")
    expect(page.locator("#history li").first).to_contain_text("rejected (not an animal)")
    page.screenshot(path=str(tmp_path / "history.png"), full_page=True)


def test_it_asks_for_a_choice_when_the_model_says_other_and_shows_the_claim_and_the_count(
        live_server, species, alice, annotator, page):
    """Issue 11 changed this: Enter used to record the best project class when the model's answer
    was "other" (nearly always "dog" in the walk), teaching the next model wrong labels."""
    path = demo_photo("llama", 0)
    image = uploads.image_upload(user=alice, filename=path.name, data=path.read_bytes()).image
    prediction = predictions.image_classify(image_id=image.id)
    classes = species.card["classes"]
    # Make the model's best guess "other", with llama the best project class.
    probabilities = [0.0] * len(classes)
    probabilities[classes.index("other")], probabilities[classes.index("llama")] = 0.7, 0.3
    prediction.top = [{"label": "other", "p": 0.7}, {"label": "llama", "p": 0.3}]
    prediction.label, prediction.confidence, prediction.probabilities = "other", 0.7, probabilities
    prediction.save()
    services.feedback_give(user=alice, image=image, label="dalmatian")  # jumps the queue: shown first
    other = demo_photo("flamingo", 0)
    predictions.image_classify(image_id=uploads.image_upload(user=alice, filename=other.name,
                                                             data=other.read_bytes()).image.id)

    log_in(page, live_server.url, "dana", "dana-password-1")
    page.goto(f"{live_server.url}/review/")
    expect(page.locator("#review")).to_have_attribute("data-image", str(image.id))
    expect(page.locator("#review-unknown")).to_be_visible()
    expect(page.locator("#review-unknown")).to_contain_text("does not recognise one of the project's classes")
    expect(page.locator("#review-claim")).to_have_text("uploader says: dalmatian")
    expect(page.locator("#review-left")).to_contain_text("2 images left")
    expect(page.locator("#candidates li.suggested")).to_have_count(0)  # nothing preselected

    page.keyboard.press("Enter")

    expect(page.locator("#review-message")).to_contain_text("Nothing recorded")
    expect(page.locator("#review-message")).to_contain_text("a digit, / to search, or N")
    assert not Annotation.objects.exclude(kind="feedback").exists()
    assert current_image(page) == str(image.id)

    assert press_and_wait(page, "1") != str(image.id)  # the first candidate: llama
    expect(page.locator("#log li").first).to_contain_text(f"image {image.id}: corrected llama")
    expect(page.locator("#review-left")).to_contain_text("1 image left")

    # Reopening the decision from the log holds the image again; the new decision is appended.
    page.locator("#log li", has_text=f"image {image.id}: corrected llama").click()
    expect(page.locator("#review")).to_have_attribute("data-image", str(image.id))
    expect(page.locator("#review-message")).to_contain_text("Reopened")
    press_and_wait(page, "n")
    expect(page.locator("#log li").first).to_contain_text(f"image {image.id}: rejected")
    assert list(Annotation.objects.filter(image=image).values_list("kind", "label")) == [
        ("feedback", "dalmatian"), ("corrected", "llama"), ("rejected", "")]
