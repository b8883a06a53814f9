"""Bulk actions from the data browser: one annotation per image with the bulk action as its
provenance, claims respected, undo per image, permissions; send to review, predict, export;
and the labels page and confusion-matrix links into the browser."""

import pytest

from classifier.models import Image, InferenceJob, Species
from labeling import selectors
from labeling.models import Annotation, ImageSummary
from tests.labeling.factories import annotate, predicted_image, with_margin
from tests.labeling.review_client import next_items, post

pytestmark = pytest.mark.django_db

BULK = "/api/images/bulk/"


@pytest.fixture
def images(species):
    return [predicted_image(version=species, probs=with_margin(species, 0.3, top="dog")) for _ in range(4)]


def labels_of(images) -> dict[int, str]:
    return {i: a.label or a.kind for i, a in selectors.current_labels([im.id for im in images]).items()}


def test_bulk_label_writes_one_annotation_per_image_with_its_provenance(client, images, reviewer):
    client.force_login(reviewer)
    ids = [im.id for im in images[:3]]

    response = post(client, BULK, {"action": "label", "label": "cat", "ids": ids})

    assert response.status_code == 200, response.content
    body = response.json()
    assert sorted(body["done"]) == sorted(ids) and body["skipped"] == {}
    written = Annotation.objects.filter(image_id__in=ids)
    assert written.count() == 3
    assert {(a.kind, a.role, a.label, a.user_id, a.suggested_label) for a in written} == {
        ("corrected", "reviewer", "cat", reviewer.id, "dog")}
    assert {a.source for a in written} == {body["source"]} and body["source"].startswith("bulk ")
    assert labels_of(images) == {i: "cat" for i in ids}
    assert sorted(i["id"] for i in client.get("/api/images/", {"label": "cat"}).json()["results"]) == sorted(ids)


def test_bulk_other_rejects_and_accepting_the_suggestion_is_accepted(client, images, reviewer):
    client.force_login(reviewer)

    post(client, BULK, {"action": "label", "label": "other", "ids": [images[0].id]})
    post(client, BULK, {"action": "label", "label": "dog", "ids": [images[1].id]})

    kinds = dict(Annotation.objects.values_list("image_id", "kind"))
    assert kinds == {images[0].id: "rejected", images[1].id: "accepted"}
    assert selectors.training_labels() == {images[0].id: "other", images[1].id: "dog"}


def test_an_image_held_in_someone_elses_queue_is_skipped_and_reported(client, images, reviewer, annotator):
    client.force_login(annotator)
    held = next_items(client)[0]["image"]
    client.force_login(reviewer)

    body = post(client, BULK, {"action": "label", "label": "cat", "ids": [im.id for im in images]}).json()

    assert list(body["skipped"]) == [str(held)] and "ann" in body["skipped"][str(held)]
    assert held not in body["done"] and len(body["done"]) == 3
    assert not Annotation.objects.filter(image_id=held).exists()


def test_a_bulk_label_is_undone_per_image(client, images, reviewer):
    client.force_login(reviewer)
    ids = [im.id for im in images[:2]]
    post(client, BULK, {"action": "label", "label": "cat", "ids": ids})

    response = post(client, f"/api/images/{ids[0]}/bulk-undo/")

    assert response.status_code == 200, response.content
    assert labels_of(images) == {ids[1]: "cat"}
    assert post(client, f"/api/images/{ids[0]}/bulk-undo/").status_code == 400  # nothing left to undo


def test_select_all_matching_the_filter(client, species, images, reviewer):
    client.force_login(reviewer)
    cat = predicted_image(version=species, probs=with_margin(species, 0.3, top="cat", second="dog"))

    body = post(client, BULK, {"action": "label", "label": "llama", "filter": "predicted=dog&sort=margin"}).json()

    assert sorted(body["done"]) == sorted(im.id for im in images)
    assert cat.id not in labels_of([cat])


@pytest.mark.parametrize("role", ["annotator", "uploader"])
def test_only_reviewers_label_in_bulk(client, images, role, annotator, uploader):
    client.force_login({"annotator": annotator, "uploader": uploader}[role])

    response = post(client, BULK, {"action": "label", "label": "cat", "ids": [images[0].id]})

    assert response.status_code in (403, 400)
    assert not Annotation.objects.exists()


def test_an_uploader_cannot_act_on_others_images_through_a_filter(client, species, images, uploader, django_user_model):
    own = predicted_image(version=species, probs=with_margin(species, 0.3), uploader=uploader)
    client.force_login(uploader)

    response = post(client, BULK, {"action": "export", "filter": ""})

    assert response.status_code == 403  # exporting needs the reviewer role
    from labeling import bulk
    assert bulk.selection(user=uploader, filter_query="") == [own.id]
    assert bulk.selection(user=uploader, ids=[im.id for im in images]) == []


def test_send_to_review_puts_labelled_images_back_in_the_queue(client, images, reviewer, annotator):
    dog = Species.objects.get(name="dog")
    for image in images:
        annotate(image=image, kind="accepted", role="annotator", species=dog, user=annotator)
    client.force_login(reviewer)
    assert next_items(client, count=4) == []

    body = post(client, BULK, {"action": "review", "ids": [images[0].id]}).json()

    assert body["done"] == [images[0].id]
    assert [item["image"] for item in next_items(client, count=4)] == [images[0].id]


def test_predict_starts_a_batch_job_on_the_selection(client, images, django_user_model):
    from labeling.roles import role_group
    trainer = django_user_model.objects.create_user("tess")
    trainer.groups.add(role_group("reviewer"))  # reviewers hold classifier.train
    client.force_login(trainer)

    body = post(client, BULK, {"action": "predict", "ids": [im.id for im in images[:2]]}).json()

    job = InferenceJob.objects.get(id=body["job"])
    assert (job.source, sorted(job.image_ids)) == ("selection", sorted(im.id for im in images[:2]))


def test_export_the_selection(client, images, reviewer):
    client.force_login(reviewer)
    post(client, BULK, {"action": "label", "label": "cat", "ids": [im.id for im in images]})

    response = post(client, BULK, {"action": "export", "ids": [images[0].id, images[1].id]})

    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = response.content.decode().strip().splitlines()[1:]
    assert sorted(r.split(",")[-1] for r in rows) == sorted(Image.objects.filter(
        id__in=[images[0].id, images[1].id]).values_list("sha256", flat=True))


def test_the_labels_page_links_its_counts_into_the_browser(client, images, reviewer, annotator):
    annotate(image=images[0], kind="accepted", role="annotator", species=Species.objects.get(name="dog"),
             user=annotator)
    client.force_login(reviewer)

    page = client.get("/labels/").content.decode()

    assert 'href="/images/?label=dog"' in page
    assert 'href="/images/?predicted=dog">4</a>' in page


def test_a_confusion_matrix_cell_opens_its_images(client, species, reviewer, annotator):
    """The model page's cell (true cat, predicted dog) links to the browser filtered to that
    version's predictions of dog among images labelled cat in the test split."""
    from classifier.models import ModelVersion

    version = ModelVersion.objects.create(
        name="head-test", kind="head", backbone=species.backbone, card_sha256="x" * 64,
        card={**species.card, "metrics": {"test": {"classes": ["cat", "dog"],
                                                  "confusion_matrix": [[1, 2], [0, 3]], "per_class": {}}}})
    cat = Species.objects.get(name="cat")
    images = [predicted_image(version=species, probs=with_margin(species, 0.3, top="dog")) for _ in range(12)]
    for image in images:
        annotate(image=image, kind="accepted", role="annotator", species=cat, user=annotator)
    from tests.labeling.factories import prediction_make, probabilities
    for image in images[:6]:  # the candidate version says dog for half of them
        prediction_make(image=image, version=version, probs=probabilities(version, {"dog": 0.9}))
    client.force_login(reviewer)

    page = client.get(f"/models/{version.id}/").content.decode()
    link = f"/images/?label=cat&amp;predicted=dog&amp;version={version.id}&amp;split=test"
    assert f'href="{link}">2</a>' in page

    shown = client.get(link.replace("&amp;", "&")).context["page"].images
    test_split = set(ImageSummary.objects.filter(split="test").values_list("image_id", flat=True))
    assert sorted(i.id for i in shown) == sorted(im.id for im in images[:6] if im.id in test_split)
    assert client.get("/api/images/", {"version": version.id, "predicted": "cat"}).json()["results"] == []
