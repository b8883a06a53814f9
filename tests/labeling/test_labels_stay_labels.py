"""Labels stay labels (issue 11): an uploader's claim is never exported as a label nor comes back
as one through an import; the reviewer who imported a dataset sees its suspected label errors;
the labels page counts ground-truth labels per class and split."""

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.core.cache import cache

from classifier.ml.datasets import Item, assign_splits
from classifier.models import Embedding, Image, Prediction, Species, Upload
from labeling import review_queue, selectors
from labeling.models import Annotation, ImportJob
from tests.helpers import demo_photo
from tests.labeling.factories import annotate, cluster_embedding, predicted_image, with_margin
from tests.labeling.review_client import post
from tests.labeling.test_import_export import import_zip, make_zip

pytestmark = pytest.mark.django_db


def wipe() -> None:
    """A fresh database: nothing labelled or uploaded is left."""
    for model in (Annotation, ImportJob, Upload, Prediction, Embedding, Image):
        model.objects.all().delete()


def test_an_export_import_round_trip_makes_no_label_of_an_uploaders_claim(client, species, reviewer, uploader):
    import_zip(client, reviewer, make_zip({"dalmatian/a.jpg": demo_photo("dalmatian").read_bytes(),
                                           "flamingo/b.jpg": demo_photo("flamingo").read_bytes()}))
    dalmatian = Image.objects.get(annotations__label="dalmatian")
    claimed = predicted_image(version=species, probs=with_margin(species, 0.3), uploader=uploader)
    client.force_login(uploader)
    Upload.objects.create(image=dalmatian, user=uploader, filename="spotty.jpg")
    assert post(client, f"/api/images/{dalmatian.id}/feedback/", {"label": "llama"}).status_code == 201
    assert post(client, f"/api/images/{claimed.id}/feedback/", {"label": "starfish"}).status_code == 201
    # The claim after the import neither replaces nor hides the imported label.
    assert selectors.training_labels() == {dalmatian.id: "dalmatian",
                                           Image.objects.get(annotations__label="flamingo").id: "flamingo"}

    client.force_login(reviewer)
    exported = client.get("/api/export/?kind=zip").content
    rows = list(csv.DictReader(io.StringIO(client.get("/api/export/?kind=csv").content.decode())))

    folders = sorted(name.split("/")[0] for name in zipfile.ZipFile(io.BytesIO(exported)).namelist())
    assert folders == ["dalmatian", "flamingo"]
    labels = sorted((r["kind"], r["label"], bool(r["path"])) for r in rows)
    assert labels == [("feedback", "llama", False), ("feedback", "starfish", False),
                      ("imported", "dalmatian", True), ("imported", "flamingo", True)]

    wipe()
    import_zip(client, reviewer, exported)

    assert sorted(selectors.training_labels().values()) == ["dalmatian", "flamingo"]
    assert not Annotation.objects.filter(label__in=["llama", "starfish"]).exists()
    assert Image.objects.count() == 2


# --- the importer sees the suspects of their import ------------------------------------------

@pytest.fixture
def imported_with_a_mistake(species, reviewer):
    """An import by the reviewer: eight images per class near their class's centre, and a cat
    filed under dog."""
    cache.clear()  # suspects are cached across requests
    rng = np.random.default_rng(0)
    job = ImportJob.objects.create(user=reviewer, archive="imports/x.zip", filename="x.zip", status="done")
    clusters = {"dog": 0, "cat": 1, "llama": 2}

    def imported(label: str, looks_like: str) -> Image:
        image = predicted_image(version=species, probs=with_margin(species, 0.8),
                                embedding=cluster_embedding(clusters[looks_like], rng=rng))
        annotate(image=image, kind="imported", role="import", species=Species.objects.get(name=label),
                 user=reviewer, source=f"import {job.id}: {label}/{image.id}.jpg")
        return image

    for label in clusters:
        for _ in range(8):
            imported(label, label)
    yield job, imported("dog", looks_like="cat")
    cache.clear()


def test_the_importing_reviewer_gets_the_suspects_of_their_import_in_their_queue(
        settings, imported_with_a_mistake, reviewer):
    settings.REVIEW_RANDOM_SHARE = 0.0
    job, mistake = imported_with_a_mistake

    claims = review_queue.queue_next(user=reviewer, count=5)

    # Their own import's other labels are not asked of them again; the suspect is.
    assert [c.image_id for c in claims] == [mistake.id]


def test_the_import_shows_its_suspected_label_errors(client, imported_with_a_mistake, reviewer):
    job, mistake = imported_with_a_mistake
    client.force_login(reviewer)

    detail = client.get(f"/api/imports/{job.id}/").json()
    page = client.get("/labels/").content.decode()

    assert [(s["image"], s["label"], s["model_label"]) for s in detail["suspected_labels"]] == [
        (mistake.id, "dog", "cat")]
    assert f'href="/images/{mistake.id}/"' in page


# --- the labels page ------------------------------------------------------------------------

def test_the_labels_page_counts_labels_per_class_and_split(client, settings, species, reviewer, label_images,
                                                          annotator):
    settings.TRAINING_MIN_PER_CLASS = 5
    images = label_images({"cat": 7, "dog": 2})
    rejected = predicted_image(version=species, probs=with_margin(species, 0.3))
    annotate(image=rejected, kind="rejected", role="annotator", user=annotator)
    claimed = predicted_image(version=species, probs=with_margin(species, 0.3))
    annotate(image=claimed, kind="feedback", role="uploader", species=Species.objects.get(name="llama"))

    rows = {r.name: r for r in selectors.label_counts()}

    split_of = {i.sha256: i.split for i in assign_splits(
        [Item(path=Path(image.sha256), label="", sha256=image.sha256) for image in images],
        test_fraction=settings.TRAINING_TEST_FRACTION, val_fraction=settings.TRAINING_VAL_FRACTION)}
    expected_cat = {s: 0 for s in ("train", "val", "test")}
    for image in images[:7]:
        expected_cat[split_of[image.sha256]] += 1
    assert rows["cat"].splits == expected_cat
    assert (rows["cat"].total, rows["cat"].needed) == (7, 0)
    assert (rows["dog"].total, rows["dog"].needed) == (2, 3)
    assert (rows["other"].total, rows["llama"].total, rows["llama"].needed) == (1, 0, 5)  # a claim is no label
    assert list(rows)[-1] == "other"

    client.force_login(reviewer)
    page = client.get("/labels/").content.decode()
    assert '<tr data-class="dog">' in page and "needs 3 more" in page

