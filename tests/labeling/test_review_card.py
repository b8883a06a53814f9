"""What the review card shows and what its keys record (issue 11): Enter takes exactly the
suggestion shown, the uploader's claim, how many images are left, and reopening a decision."""

import pytest

from classifier import registry
from classifier import selectors as selectors_c
from classifier.models import Species, Upload
from labeling import selectors
from labeling.models import Annotation, Claim
from tests.labeling.factories import annotate, predicted_image, prediction_make, probabilities, with_margin
from tests.labeling.review_client import decide, next_items, post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_random_share")]


def reopen(client, annotation_id: int):
    return post(client, f"/api/review/decisions/{annotation_id}/reopen/")


# --- Enter accepts exactly what was shown ---------------------------------------------------

def test_it_accepts_the_prediction_shown_even_when_a_newer_one_arrived(client, species, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    registry.species_create(name="zebra")
    newer = selectors_c.production_model()  # a new production version...
    prediction_make(image=dog_image, version=newer, probs=probabilities(newer, {"cat": 0.9}))  # ...says cat

    response = decide(client, item, "accept", prediction=item["prediction"]["id"])

    assert response.status_code == 201, response.content
    annotation = Annotation.objects.get()
    assert (annotation.kind, annotation.label, annotation.model_version) == ("accepted", "dog", species)


def test_it_refuses_to_accept_a_prediction_of_another_image(client, species, dog_image, annotator):
    other = predicted_image(version=species, probs=with_margin(species, 0.9, top="cat", second="dog"))
    client.force_login(annotator)
    item = next(i for i in next_items(client, 2) if i["image"] == dog_image.id)

    response = decide(client, item, "accept", prediction=other.predictions.get().id)

    assert response.status_code == 400
    assert not Annotation.objects.exists()


# --- the uploader's claim and the count ----------------------------------------------------

def test_it_shows_the_uploaders_latest_claim(client, species, dog_image, annotator, uploader):
    Upload.objects.create(image=dog_image, user=uploader, filename="pet.jpg")
    client.force_login(uploader)
    post(client, f"/api/images/{dog_image.id}/feedback/", {"label": "cat"})
    post(client, f"/api/images/{dog_image.id}/feedback/", {"label": "dalmatian"})
    plain = predicted_image(version=species, probs=with_margin(species, 0.5))

    client.force_login(annotator)
    items = {i["image"]: i for i in next_items(client, 2)}

    assert items[dog_image.id]["uploader_claim"] == "dalmatian"
    assert items[plain.id]["uploader_claim"] is None


def test_it_counts_the_images_left_for_the_user(client, species, annotator, annotator2):
    for m in (0.1, 0.2, 0.3, 0.4, 0.5):
        predicted_image(version=species, probs=with_margin(species, m))
    client.force_login(annotator2)
    next_items(client, 1)  # held by someone else: not left for `annotator`
    client.force_login(annotator)

    first = next_items(client, 2)
    assert [i["left"] for i in first] == [4, 4]  # the two held for them and two more
    decide(client, first[0], "accept")

    assert next_items(client, 2)[0]["left"] == 3


def test_it_counts_nothing_left_when_the_queue_is_empty(client, species, annotator):
    client.force_login(annotator)
    assert next_items(client, 3) == []


# --- reopening a decision -------------------------------------------------------------------

def test_it_reopens_a_recent_decision_and_appends_the_new_one(client, species, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    first = decide(client, item, "accept").json()

    response = reopen(client, first["id"])

    assert response.status_code == 200, response.content
    again = response.json()
    assert again["image"] == dog_image.id and again["token"] != item["token"]
    assert again["based_on"] == first["id"]
    assert decide(client, again, "choose", label="cat").status_code == 201
    assert list(Annotation.objects.values_list("kind", "label")) == [("accepted", "dog"), ("corrected", "cat")]
    assert selectors.current_label(dog_image).label == "cat"


def test_the_review_page_lists_recent_decisions_to_reopen(client, species, dog_image, annotator):
    client.force_login(annotator)
    decision = decide(client, next_items(client)[0], "accept").json()

    page = client.get("/review/").content.decode()

    assert f'data-annotation="{decision["id"]}"' in page


def test_it_refuses_to_reopen_someone_elses_decision(client, dog_image, annotator, annotator2):
    client.force_login(annotator)
    decision = decide(client, next_items(client)[0], "accept").json()
    client.force_login(annotator2)

    response = reopen(client, decision["id"])

    assert response.status_code == 400
    assert not Claim.objects.exists()


def test_it_refuses_to_reopen_once_someone_else_decided(client, dog_image, annotator, reviewer):
    client.force_login(annotator)
    decision = decide(client, next_items(client)[0], "accept").json()
    annotate(image=dog_image, kind="corrected", role="reviewer", species=Species.objects.get(name="cat"),
             user=reviewer)

    response = reopen(client, decision["id"])

    assert response.status_code == 409
    assert "Someone else has decided" in response.json()["detail"]


def test_it_refuses_to_reopen_an_image_someone_else_holds(client, settings, species, dog_image, annotator,
                                                           annotator2):
    settings.DOUBLE_ANNOTATION_PERCENT = 100  # a second annotator is wanted on every image
    client.force_login(annotator)
    decision = decide(client, next_items(client)[0], "accept").json()
    client.force_login(annotator2)
    assert next_items(client)[0]["image"] == dog_image.id
    client.force_login(annotator)

    response = reopen(client, decision["id"])

    assert response.status_code == 409
    assert Claim.objects.get().user == annotator2
