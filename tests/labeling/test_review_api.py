"""The review queue through the HTTP API: next items, decisions and their conflicts."""

from datetime import timedelta

import pytest
from django.utils import timezone

from classifier.models import Prediction, Upload
from labeling.models import Annotation, Claim
from tests.labeling.factories import (
    predicted_image,
    probabilities,
    with_margin,
)
from tests.labeling.review_client import NEXT, decide, next_items, post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_random_share")]

# --- the next items -------------------------------------------------------------------------

def test_it_hands_out_up_to_count_items_with_what_the_page_needs(client, species, annotator):
    for m in (0.1, 0.2, 0.3, 0.4, 0.5):
        predicted_image(version=species, probs=with_margin(species, m))
    client.force_login(annotator)

    items = next_items(client, 3)

    assert len(items) == 3
    for item in items:
        assert {"token", "expires", "image", "preview_url", "page_url", "prediction", "based_on"} <= set(item)
        assert item["preview_url"].endswith(".preview.jpg")
        assert item["prediction"]["label"] == "dog"
        assert item["prediction"]["model_version"]["name"] == species.name
        assert item["based_on"] == 0
    assert Claim.objects.filter(user=annotator).count() == 3


def test_it_hands_out_the_same_held_items_when_asked_again(client, species, annotator):
    for m in (0.1, 0.2, 0.3, 0.4, 0.5):
        predicted_image(version=species, probs=with_margin(species, m))
    client.force_login(annotator)

    first = next_items(client, 3)
    again = next_items(client, 3)

    assert [(i["image"], i["token"]) for i in again] == [(i["image"], i["token"]) for i in first]
    assert Claim.objects.count() == 3


def test_it_answers_an_empty_list_when_nothing_is_left(client, species, annotator):
    client.force_login(annotator)
    assert next_items(client, 3) == []


def test_it_refuses_a_count_that_is_not_a_number(client, species, annotator):
    client.force_login(annotator)
    response = client.get(NEXT, {"count": "many"})
    assert response.status_code == 400
    assert "count" in response.json()["detail"]


# --- decisions ------------------------------------------------------------------------------

def test_it_records_an_accepted_suggestion(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)

    response = decide(client, item, "accept", time_taken_ms=1234)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["label"], body["suggested_label"]) == ("accepted", "dog", "dog")
    assert (body["user"], body["role"], body["time_taken_ms"]) == ("ann", "annotator", 1234)


def test_it_records_who_when_how_long_and_what_prediction(client, species, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    before = timezone.now()

    decide(client, item, "accept", time_taken_ms=850)

    annotation = Annotation.objects.get()
    assert annotation.user == annotator
    assert annotation.role == Annotation.Role.ANNOTATOR
    assert annotation.time_taken_ms == 850
    assert annotation.prediction == Prediction.objects.get(image=dog_image)
    assert annotation.model_version == species
    assert before <= annotation.created <= timezone.now()
    assert annotation.species.name == "dog"


def test_it_records_a_reviewers_decision_with_the_reviewer_role(client, dog_image, reviewer):
    client.force_login(reviewer)
    (item,) = next_items(client)

    response = decide(client, item, "reject")

    assert response.status_code == 201
    assert Annotation.objects.get().role == Annotation.Role.REVIEWER


def test_it_records_choosing_another_class_as_a_correction(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)

    response = decide(client, item, "choose", label="cat")

    assert response.status_code == 201
    assert (response.json()["kind"], response.json()["label"]) == ("corrected", "cat")
    annotation = Annotation.objects.get()
    assert annotation.species.name == "cat"
    assert annotation.suggested_label == "dog"


def test_it_records_choosing_the_suggested_class_as_accepted(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)

    response = decide(client, item, "choose", label="Dog")

    assert response.status_code == 201
    assert (response.json()["kind"], response.json()["label"]) == ("accepted", "dog")


def test_it_records_not_an_animal_as_a_rejection_without_label(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)

    response = decide(client, item, "reject")

    assert response.status_code == 201
    assert (response.json()["kind"], response.json()["label"]) == ("rejected", "")
    assert Annotation.objects.get().species is None


def test_it_releases_the_claim_after_a_decision(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    decide(client, item, "accept")
    assert not Claim.objects.exists()


def test_it_refuses_an_unknown_label_and_keeps_the_hold(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)

    response = decide(client, item, "choose", label="unicorn")

    assert response.status_code == 400
    assert "unicorn" in response.json()["detail"]
    assert not Annotation.objects.exists()
    assert Claim.objects.get().token == item["token"]


def test_it_refuses_an_unknown_action(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    response = decide(client, item, "maybe")
    assert response.status_code == 400
    assert not Annotation.objects.exists()


def test_it_refuses_to_accept_when_the_suggestion_is_other(client, species, annotator):
    predicted_image(version=species, probs=probabilities(species, {"other": 0.7, "dog": 0.2}))
    client.force_login(annotator)
    (item,) = next_items(client)
    assert item["prediction"]["label"] == "other"

    response = decide(client, item, "accept")

    assert response.status_code == 400
    assert "no suggestion to accept" in response.json()["detail"]
    assert not Annotation.objects.exists()
    assert Claim.objects.get().token == item["token"]  # still held: the annotator chooses a class next


def test_it_refuses_a_token_held_by_someone_else(client, dog_image, annotator, annotator2):
    client.force_login(annotator)
    (item,) = next_items(client)
    client.force_login(annotator2)

    response = decide(client, item, "accept")

    assert response.status_code == 409
    assert "no longer held for you" in response.json()["detail"]
    assert not Annotation.objects.exists()
    assert Claim.objects.get().user == annotator


def test_it_refuses_a_decision_on_an_expired_claim(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    Claim.objects.filter(token=item["token"]).update(expires=timezone.now() - timedelta(seconds=1))

    response = decide(client, item, "accept")

    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
    assert not Annotation.objects.exists()


def test_it_refuses_a_decision_on_a_claim_that_expired_while_the_page_was_open(client, dog_image, annotator,
                                                                             annotator2):
    client.force_login(annotator)
    (item,) = next_items(client)
    Claim.objects.update(expires=timezone.now() - timedelta(seconds=1))
    client.force_login(annotator2)
    (taken,) = next_items(client)  # the image went to someone else meanwhile
    assert taken["image"] == item["image"]
    client.force_login(annotator)

    response = decide(client, item, "accept")

    assert response.status_code == 409
    assert not Annotation.objects.exists()
    assert Claim.objects.get().user == annotator2


def test_it_refuses_a_decision_when_feedback_arrived_since_the_page_loaded(client, dog_image, annotator, uploader):
    Upload.objects.create(image=dog_image, user=uploader, filename="pet.jpg")
    client.force_login(annotator)
    (item,) = next_items(client)
    client.force_login(uploader)
    assert post(client, f"/api/images/{dog_image.id}/feedback/", {"label": "cat"}).status_code == 201
    client.force_login(annotator)

    response = decide(client, item, "accept")

    assert response.status_code == 409
    assert "changed since you loaded it" in response.json()["detail"]
    assert list(Annotation.objects.values_list("kind", flat=True)) == ["feedback"]
    assert Claim.objects.get().token == item["token"]  # still held: reload and decide again
