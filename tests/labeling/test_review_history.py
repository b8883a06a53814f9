"""The review queue through the HTTP API: undo, skip, history and uploader feedback."""


from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from classifier import registry
from classifier.models import Upload
from labeling.models import Annotation, Claim, Skip
from tests.labeling.factories import (
    cluster_embedding,
    predicted_image,
    with_margin,
)
from tests.labeling.review_client import SKIP, UNDO, decide, next_items, post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_random_share")]

# --- undo -----------------------------------------------------------------------------------

def test_it_undoes_the_last_decision_and_hands_the_image_back(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    decision = decide(client, item, "choose", label="cat").json()

    response = post(client, UNDO)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["image"] == dog_image.id
    assert body["token"] != item["token"]
    undo = Annotation.objects.latest("id")
    assert (undo.kind, undo.reverts_id, undo.user) == ("undo", decision["id"], annotator)
    assert body["based_on"] == undo.id
    claim = Claim.objects.get(image=dog_image)
    assert (claim.user, claim.token) == (annotator, body["token"])
    assert next_items(client, 1)[0]["token"] == body["token"]


def test_it_lets_a_decision_follow_an_undo(client, dog_image, annotator):
    client.force_login(annotator)
    (item,) = next_items(client)
    decide(client, item, "choose", label="cat")
    again = post(client, UNDO).json()

    response = decide(client, again, "accept")

    assert response.status_code == 201
    assert list(Annotation.objects.values_list("kind", flat=True)) == ["corrected", "undo", "accepted"]


def test_it_refuses_an_undo_with_nothing_to_undo(client, dog_image, annotator):
    client.force_login(annotator)
    response = post(client, UNDO)
    assert response.status_code == 409
    assert "nothing to undo" in response.json()["detail"]
    assert not Annotation.objects.exists()


def test_it_undoes_the_decision_before_on_a_second_undo(client, species, annotator):
    predicted_image(version=species, probs=with_margin(species, 0.1))
    predicted_image(version=species, probs=with_margin(species, 0.5))
    client.force_login(annotator)
    first_item, second_item = next_items(client, 2)
    first = decide(client, first_item, "accept").json()
    second = decide(client, second_item, "reject").json()

    one = post(client, UNDO)
    two = post(client, UNDO)

    assert one.status_code == two.status_code == 200
    assert (one.json()["image"], two.json()["image"]) == (second_item["image"], first_item["image"])
    undos = list(Annotation.objects.filter(kind="undo").order_by("id").values_list("reverts_id", flat=True))
    assert undos == [second["id"], first["id"]]
    assert set(Claim.objects.filter(user=annotator).values_list("image_id", flat=True)) == {
        first_item["image"], second_item["image"]
    }
    assert post(client, UNDO).status_code == 409  # both undone: nothing left


# --- skip -----------------------------------------------------------------------------------

def test_it_offers_a_skipped_image_to_the_same_annotator_only_after_the_claim_time(client, settings, dog_image,
                                                                                   annotator):
    # Issue 11: a skip used to hide the image from that annotator for ever.
    client.force_login(annotator)
    (item,) = next_items(client)

    response = post(client, SKIP, {"token": item["token"]})

    assert response.status_code == 204
    assert Skip.objects.filter(image=dog_image, user=annotator).exists()
    assert next_items(client, 5) == []
    Skip.objects.update(created=timezone.now() - timedelta(seconds=settings.REVIEW_CLAIM_SECONDS + 1))
    assert [i["image"] for i in next_items(client, 5)] == [dog_image.id]


def test_it_hides_an_image_skipped_again_for_another_claim_time(client, settings, dog_image, annotator):
    client.force_login(annotator)
    post(client, SKIP, {"token": next_items(client)[0]["token"]})
    Skip.objects.update(created=timezone.now() - timedelta(seconds=settings.REVIEW_CLAIM_SECONDS + 1))

    post(client, SKIP, {"token": next_items(client)[0]["token"]})

    assert next_items(client, 5) == []
    assert Skip.objects.count() == 1


def test_it_offers_a_skipped_image_to_another_annotator(client, dog_image, annotator, annotator2):
    client.force_login(annotator)
    (item,) = next_items(client)
    post(client, SKIP, {"token": item["token"]})

    client.force_login(annotator2)

    assert [i["image"] for i in next_items(client, 5)] == [dog_image.id]


def test_it_refuses_to_skip_with_someone_elses_token(client, dog_image, annotator, annotator2):
    client.force_login(annotator)
    (item,) = next_items(client)
    client.force_login(annotator2)

    assert post(client, SKIP, {"token": item["token"]}).status_code == 409
    assert not Skip.objects.exists()


# --- history and feedback -------------------------------------------------------------------

def test_it_lists_the_history_oldest_first_with_provenance(client, dog_image, annotator, uploader, reviewer):
    Upload.objects.create(image=dog_image, user=uploader, filename="pet.jpg")
    client.force_login(uploader)
    post(client, f"/api/images/{dog_image.id}/feedback/", {"label": "llama"})
    client.force_login(annotator)
    decide(client, next_items(client)[0], "accept")
    again = post(client, UNDO).json()
    decide(client, again, "choose", label="cat", time_taken_ms=400)
    client.force_login(reviewer)

    response = client.get(f"/api/images/{dog_image.id}/history/")

    assert response.status_code == 200
    rows = [(r["kind"], r["user"], r["role"], r["label"]) for r in response.json()]
    assert rows == [
        ("feedback", "ursula", "uploader", "llama"),
        ("accepted", "ann", "annotator", "dog"),
        ("undo", "ann", "annotator", "dog"),
        ("corrected", "ann", "annotator", "cat"),
    ]
    history = response.json()
    assert history[2]["reverts"] == history[1]["id"]
    assert history[1]["model_version"] == dog_image.predictions.get().model_version.name
    assert history[3]["time_taken_ms"] == 400


def test_it_records_uploader_feedback_as_a_suggestion(client, dog_image, uploader):
    Upload.objects.create(image=dog_image, user=uploader, filename="pet.jpg")
    client.force_login(uploader)

    response = post(client, f"/api/images/{dog_image.id}/feedback/", {"label": "cat"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["kind"], body["role"], body["label"], body["user"]) == ("feedback", "uploader", "cat", "ursula")
    assert body["suggested_label"] == "dog"


def test_it_refuses_feedback_with_an_unknown_class(client, dog_image, uploader):
    Upload.objects.create(image=dog_image, user=uploader, filename="pet.jpg")
    client.force_login(uploader)
    response = post(client, f"/api/images/{dog_image.id}/feedback/", {"label": "unicorn"})
    assert response.status_code == 400
    assert not Annotation.objects.exists()


def test_it_puts_an_image_with_feedback_first_in_the_queue(client, species, annotator, uploader):
    for m in (0.02, 0.05, 0.1):
        predicted_image(version=species, probs=with_margin(species, m))
    sure = predicted_image(version=species, probs=with_margin(species, 0.85), uploader=uploader)
    client.force_login(uploader)
    assert post(client, f"/api/images/{sure.id}/feedback/", {"label": "cat"}).status_code == 201

    client.force_login(annotator)
    (item,) = next_items(client, 1)

    assert item["image"] == sure.id
    assert item["based_on"] == Annotation.objects.get().id


# --- what the annotator saw -----------------------------------------------------------------

def test_it_accepts_the_suggestion_the_annotator_was_shown(client, species, annotator):
    image = predicted_image(version=species, probs=with_margin(species, 0.2),
                            embedding=cluster_embedding(0, rng=np.random.default_rng(0)))
    registry.species_create(name="zebra")  # a new zero-shot version takes production
    client.force_login(annotator)
    (item,) = next_items(client)
    assert (item["image"], item["prediction"]["label"]) == (image.id, "dog")

    response = decide(client, item, "accept")

    assert response.status_code == 201, response.content
    annotation = Annotation.objects.get()
    assert (annotation.kind, annotation.label, annotation.suggested_label) == ("accepted", "dog", "dog")
    assert annotation.model_version == species


def test_it_refuses_a_time_taken_too_large_to_store(client, dog_image, annotator):
    client.raise_request_exception = False
    client.force_login(annotator)
    (item,) = next_items(client)

    response = decide(client, item, "accept", time_taken_ms=3_000_000_000)

    assert response.status_code == 400
    assert "time_taken_ms" in response.json()
