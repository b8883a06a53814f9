"""`GET /api/images/?label=` is the current label, derived from the annotation history, and
`?predicted=` the production version's prediction (issue 11: `?label=` used to match any
prediction ever made)."""

import pytest

from classifier import registry, selectors
from classifier.models import Species
from tests.helpers import logged_in_member
from tests.labeling.factories import annotate, predicted_image, prediction_make, probabilities, with_margin

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client, django_user_model):
    return logged_in_member(client, django_user_model, "vera", "annotator")


def listed(client, **params) -> list[int]:
    response = client.get("/api/images/", params)
    assert response.status_code == 200, response.content
    return sorted(i["id"] for i in response.json()["results"])


def test_label_follows_the_current_label_after_a_correction(client, species, viewer):
    dog, cat = Species.objects.get(name="dog"), Species.objects.get(name="cat")
    a = predicted_image(version=species, probs=with_margin(species, 0.3, top="dog"))
    b = predicted_image(version=species, probs=with_margin(species, 0.3, top="dog"))
    annotate(image=a, kind="imported", role="import", species=dog)
    annotate(image=b, kind="imported", role="import", species=cat)
    assert listed(client, label="dog") == [a.id]

    annotate(image=a, kind="corrected", role="annotator", species=cat, user=viewer)

    assert listed(client, label="dog") == []
    assert listed(client, label="cat") == sorted([a.id, b.id])
    # Both are still predicted "dog": that is what ?predicted= asks.
    assert listed(client, predicted="dog") == sorted([a.id, b.id])


def test_label_never_matches_an_uploaders_claim_and_other_is_not_an_animal(client, species, viewer):
    claimed = predicted_image(version=species, probs=with_margin(species, 0.3))
    annotate(image=claimed, kind="feedback", role="uploader", species=Species.objects.get(name="llama"))
    rejected = predicted_image(version=species, probs=with_margin(species, 0.3))
    annotate(image=rejected, kind="rejected", role="annotator", user=viewer)

    assert listed(client, label="llama") == []
    assert listed(client, label="other") == [rejected.id]


def test_predicted_is_the_production_versions_prediction(client, species, viewer):
    image = predicted_image(version=species, probs=with_margin(species, 0.3, top="dog"))
    registry.species_create(name="zebra")  # a new zero-shot version takes production...
    production = selectors.production_model()
    prediction_make(image=image, version=production, probs=probabilities(production, {"zebra": 0.9}))  # ...says zebra
    unpredicted = predicted_image(version=species, probs=with_margin(species, 0.3, top="dog"))

    assert listed(client, predicted="zebra") == [image.id]
    assert listed(client, predicted="dog") == []  # the old version's answer, and one not re-predicted yet
    assert unpredicted.id in listed(client)


def test_the_schema_documents_both_filters(client, viewer):
    schema = client.get("/api/schema/", {"format": "json"}).json()

    parameters = {p["name"]: p for p in schema["paths"]["/api/images/"]["get"]["parameters"]}

    assert "current label" in parameters["label"]["description"]
    assert "production version" in parameters["predicted"]["description"]
