"""The data browser: every filter over GET /api/images/ and the /images/ page, permissions, and
keyset pages that neither repeat nor skip an image."""

from datetime import timedelta

import pytest
from django.utils import timezone

from classifier import registry
from classifier.models import Image, ModelVersion, Species
from labeling import label_errors
from labeling.label_errors import SuspectedLabel
from labeling.models import ImageSummary
from tests.labeling.factories import annotate, predicted_image, prediction_make, with_margin

pytestmark = pytest.mark.django_db


def listed(client, **params) -> list[int]:
    response = client.get("/api/images/", params)
    assert response.status_code == 200, response.content
    return sorted(i["id"] for i in response.json()["results"])


def shown(client, **params) -> list[int]:
    """Image ids on the /images/ page's grid."""
    response = client.get("/images/", params)
    assert response.status_code == 200
    return sorted(image.id for image in response.context["page"].images)


@pytest.fixture
def dataset(species, annotator, reviewer, uploader, alice):
    """A small dataset with one image standing out for each filter."""
    dog, cat = Species.objects.get(name="dog"), Species.objects.get(name="cat")
    week_ago = timezone.now() - timedelta(days=7)
    images = {
        # labelled dog by the annotator, predicted dog: agrees, confident
        "dog_ok": predicted_image(version=species, probs=with_margin(species, 0.8, top="dog"), uploader=uploader),
        # labelled cat by an import, predicted dog: disagrees, unsure; an old upload
        "cat_wrong": predicted_image(version=species, probs=with_margin(species, 0.05, top="dog"),
                                     uploader=alice, created=week_ago),
        # unlabelled, predicted cat
        "unlabelled": predicted_image(version=species, probs=with_margin(species, 0.4, top="cat", second="dog"),
                                      uploader=uploader),
        # queued, never predicted
        "queued": predicted_image(version=species, status="queued", uploader=alice),
    }
    annotate(image=images["dog_ok"], kind="accepted", role="annotator", species=dog, user=annotator)
    annotate(image=images["cat_wrong"], kind="imported", role="import", species=cat)
    return {name: image.id for name, image in images.items()}


@pytest.mark.parametrize("params, expected", [
    ({"label": "dog"}, ["dog_ok"]),
    ({"label": "Cat"}, ["cat_wrong"]),
    ({"labelled": "false"}, ["unlabelled", "queued"]),
    ({"predicted": "dog"}, ["dog_ok", "cat_wrong"]),
    ({"predicted": "cat"}, ["unlabelled"]),
    ({"disagrees": "true"}, ["cat_wrong"]),
    ({"confidence_min": "0.7"}, ["dog_ok"]),
    ({"confidence_max": "0.7"}, ["cat_wrong", "unlabelled"]),
    ({"margin_max": "0.1"}, ["cat_wrong"]),
    ({"margin_min": "0.3", "margin_max": "0.5"}, ["unlabelled"]),
    ({"status": "queued"}, ["queued"]),
    ({"annotator": "ann"}, ["dog_ok"]),
    ({"uploader": "alice"}, ["cat_wrong", "queued"]),
    ({"uploader": "nobody"}, []),
    ({"annotator": "nobody"}, []),  # not the images an import labelled (no annotator)
    ({"created_before": (timezone.now() - timedelta(days=3)).date().isoformat()}, ["cat_wrong"]),
    ({"created_after": (timezone.now() - timedelta(days=3)).date().isoformat()}, ["dog_ok", "unlabelled", "queued"]),
    ({"predicted": "dog", "labelled": "true", "margin_min": "0.5"}, ["dog_ok"]),  # combined
    ({"uploader": "ursula", "predicted": "dog", "disagrees": "false"}, ["dog_ok"]),
])
def test_each_filter_on_the_api_and_the_page(client, dataset, reviewer, params, expected):
    client.force_login(reviewer)
    want = sorted(dataset[name] for name in expected)

    assert listed(client, **params) == want
    assert shown(client, **params) == want


def test_split_filter_matches_the_split_a_snapshot_assigns(client, dataset, reviewer):
    client.force_login(reviewer)
    splits = dict(ImageSummary.objects.values_list("image_id", "split"))

    for split in ("train", "val", "test"):
        assert listed(client, split=split) == sorted(i for i, s in splits.items() if s == split)
    assert sum(len(listed(client, split=s)) for s in ("train", "val", "test")) == len(dataset)


def test_suspect_filter_lists_suspected_label_errors(client, dataset, reviewer, monkeypatch):
    suspect = SuspectedLabel(image_id=dataset["cat_wrong"], label="cat", model_label="dog", score=0.9, annotations=1)
    monkeypatch.setattr(label_errors, "suspected_labels", lambda: [suspect])
    client.force_login(reviewer)

    assert listed(client, suspect="true") == [dataset["cat_wrong"]]
    assert dataset["cat_wrong"] not in listed(client, suspect="false")


def test_the_label_follows_a_correction_at_once(client, dataset, reviewer):
    client.force_login(reviewer)
    annotate(image=Image.objects.get(id=dataset["dog_ok"]), kind="corrected", role="reviewer",
             species=Species.objects.get(name="cat"), user=reviewer)

    assert listed(client, label="dog") == []
    assert listed(client, label="cat") == sorted([dataset["dog_ok"], dataset["cat_wrong"]])
    assert listed(client, disagrees="true") == sorted([dataset["dog_ok"], dataset["cat_wrong"]])


def test_an_uploader_sees_only_their_own_images(client, dataset, uploader):
    client.force_login(uploader)
    own = sorted([dataset["dog_ok"], dataset["unlabelled"]])

    assert listed(client) == own
    assert shown(client) == own
    assert listed(client, uploader="alice") == []  # naming another uploader shows nothing of theirs
    assert shown(client, uploader="alice") == []
    assert listed(client, predicted="dog") == [dataset["dog_ok"]]


def test_annotators_see_every_image(client, dataset, annotator):
    client.force_login(annotator)

    assert listed(client) == sorted(dataset.values())


def test_a_bad_filter_value_is_a_400_not_everything(client, dataset, reviewer):
    client.force_login(reviewer)

    assert client.get("/api/images/", {"status": "nonsense"}).status_code == 400
    assert client.get("/api/images/", {"confidence_min": "high"}).status_code == 400
    assert client.get("/api/images/", {"cursor": "not-a-cursor"}).status_code == 400


def walk(client, **params) -> list[list[int]]:
    """Every page of the API, following `next`."""
    pages, url, query = [], "/api/images/", params
    while url:
        body = client.get(url, query).json()
        pages.append([i["id"] for i in body["results"]])
        url, query = body["next"], None
    return pages


@pytest.mark.parametrize("sort", ["-created", "created", "-confidence", "confidence", "-margin", "margin"])
def test_keyset_pages_cover_every_image_once_in_order(client, species, reviewer, sort):
    client.force_login(reviewer)
    now = timezone.now()
    ids = []
    for n in range(23):  # ties on purpose: the same time and margin for pairs of images
        image = predicted_image(version=species, probs=with_margin(species, 0.1 + 0.02 * (n // 2), top="dog"),
                                created=now - timedelta(minutes=n // 2))
        ids.append(image.id)

    pages = walk(client, sort=sort, page_size=5)

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    flat = [i for p in pages for i in p]
    assert sorted(flat) == sorted(ids)
    key = "created" if "created" in sort else sort.lstrip("-")
    values = dict(ImageSummary.objects.values_list("image_id", key))
    order = sorted(ids, key=lambda i: (values[i], i), reverse=sort.startswith("-"))
    assert flat == order


def test_sorting_by_confidence_leaves_out_unpredicted_images(client, dataset, reviewer):
    client.force_login(reviewer)

    assert dataset["queued"] not in listed(client, sort="-confidence")
    assert dataset["queued"] in listed(client, sort="-created")


def test_the_page_keeps_filters_in_its_next_link(client, species, reviewer):
    client.force_login(reviewer)
    for _ in range(3):
        predicted_image(version=species, probs=with_margin(species, 0.3, top="dog"))

    response = client.get("/images/", {"predicted": "dog", "sort": "margin"})

    assert response.context["query"] == "predicted=dog&sort=margin"
    assert b'name="predicted"' in response.content


def test_each_result_carries_its_latest_prediction_and_summary(client, dataset, reviewer):
    client.force_login(reviewer)

    results = {i["id"]: i for i in client.get("/api/images/").json()["results"]}

    dog = results[dataset["dog_ok"]]
    assert (dog["label"], dog["predicted"], dog["prediction"]["label"]) == ("dog", "dog", "dog")
    assert dog["prediction"]["model_version"]["status"] == "production"
    assert dog["confidence"] == pytest.approx(dog["prediction"]["confidence"])
    assert results[dataset["queued"]]["prediction"] is None


def test_annotators_disagree_lists_open_disputes(client, dataset, reviewer, annotator, annotator2):
    image = Image.objects.get(id=dataset["unlabelled"])
    annotate(image=image, kind="accepted", role="annotator", species=Species.objects.get(name="dog"), user=annotator)
    annotate(image=image, kind="corrected", role="annotator", species=Species.objects.get(name="cat"), user=annotator2)
    client.force_login(reviewer)

    assert listed(client, annotators_disagree="true") == [image.id]
    assert shown(client, annotators_disagree="true") == [image.id]

    annotate(image=image, kind="corrected", role="reviewer", species=Species.objects.get(name="cat"), user=reviewer)

    assert listed(client, annotators_disagree="true") == []


def test_the_rebuild_command_repairs_missing_rows(client, dataset, reviewer):
    from django.core.management import call_command

    ImageSummary.objects.all().delete()  # a database migrated with images already in it
    client.force_login(reviewer)
    assert listed(client) == []

    call_command("browse_rebuild")

    assert listed(client) == sorted(dataset.values())
    assert listed(client, label="dog") == [dataset["dog_ok"]]


def test_the_schema_documents_the_browser_filters_and_paging(client, reviewer):
    client.force_login(reviewer)
    schema = client.get("/api/schema/", {"format": "json"}).json()

    names = {p["name"] for p in schema["paths"]["/api/images/"]["get"]["parameters"]}

    assert {"label", "predicted", "disagrees", "confidence_min", "margin_max", "status", "split", "annotator",
            "uploader", "created_after", "suspect", "near_duplicate", "sort", "cursor"} <= names
    assert "/api/images/bulk/" in schema["paths"] and "/api/similar/" in schema["paths"]


def test_a_new_production_version_rewrites_the_predicted_column_once_it_commits(
        client, species, reviewer, django_capture_on_commit_callbacks):
    image = predicted_image(version=species, probs=with_margin(species, 0.3, top="dog", second="cat"))
    challenger = ModelVersion.objects.create(name="v2", kind=species.kind, backbone=species.backbone,
                                             card=species.card, card_sha256="2" * 64, parent=species)
    prediction_make(image=image, version=challenger, probs=with_margin(challenger, 0.3, top="cat", second="dog"))
    client.force_login(reviewer)
    assert listed(client, predicted="dog") == [image.id]

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        registry.model_promote(version=challenger)
        assert listed(client, predicted="cat") == []  # not inside the promotion's transaction

    assert callbacks
    assert listed(client, predicted="cat") == [image.id]
    assert listed(client, predicted="dog") == []


def test_a_promotion_moves_every_prediction_column_to_the_new_version(
        client, species, reviewer, django_capture_on_commit_callbacks):
    dog = Species.objects.get(name="dog")
    agreed = predicted_image(version=species, probs=with_margin(species, 0.3, top="dog", second="cat"))
    annotate(image=agreed, kind="imported", role="import", species=dog)
    unseen = predicted_image(version=species, probs=with_margin(species, 0.6, top="cat"))
    challenger = ModelVersion.objects.create(name="v2", kind=species.kind, backbone=species.backbone,
                                             card=species.card, card_sha256="2" * 64, parent=species)
    prediction_make(image=agreed, version=challenger, probs=with_margin(challenger, 0.1, top="cat", second="dog"))
    client.force_login(reviewer)
    assert listed(client, disagrees="true") == []

    with django_capture_on_commit_callbacks(execute=True):
        registry.model_promote(version=challenger)

    assert listed(client, disagrees="true") == [agreed.id]  # labelled dog, v2 says cat
    assert listed(client, margin_max="0.15") == [agreed.id]
    rows = {r["id"]: r for r in client.get("/api/images/").json()["results"]}
    assert rows[agreed.id]["predicted"] == "cat"
    assert rows[agreed.id]["margin"] == pytest.approx(0.1)
    # v2 has not predicted this one yet: no production prediction to show or filter on
    assert (rows[unseen.id]["predicted"], rows[unseen.id]["confidence"], rows[unseen.id]["margin"]) == ("", None, None)
    assert listed(client, predicted="cat") == [agreed.id]
