"""Import of ImageFolder zips (with broken files) and the export round trip."""

import csv
import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier.models import Embedding, Image, ModelVersion, Prediction, Species, Upload
from labeling import imports, selectors
from labeling.models import Annotation, ImportJob
from labeling.roles import role_group
from tests.helpers import demo_photo, make_image_bytes

pytestmark = pytest.mark.django_db


def make_zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def reviewer(django_user_model):
    user = django_user_model.objects.create_user("rita")
    user.groups.add(role_group("reviewer"))
    return user


def import_zip(client, reviewer, data: bytes) -> ImportJob:
    client.force_login(reviewer)
    response = client.post("/api/imports/", {"file": SimpleUploadedFile("labels.zip", data)})
    assert response.status_code == 202, response.content
    # on_commit does not fire inside a test transaction: run the task's service here.
    imports.import_run(job_id=response.json()["id"])
    return ImportJob.objects.get(id=response.json()["id"])


def current_by_sha() -> dict[str, str]:
    labels = selectors.current_labels(Image.objects.values_list("id", flat=True))
    return {Image.objects.get(id=i).sha256: a.label or "other" for i, a in labels.items()}


def test_it_imports_good_files_and_reports_the_broken_ones(client, species, reviewer):
    data = make_zip({
        "dalmatian/a.jpg": demo_photo("dalmatian").read_bytes(),
        "flamingo/b.jpg": demo_photo("flamingo").read_bytes(),
        "flamingo/broken.jpg": b"this is not a jpeg",
        "llama/empty.jpg": b"",
        "dalmatian/readme.txt": b"notes",
        "top-level.jpg": demo_photo("llama").read_bytes(),
        "__MACOSX/dalmatian/._a.jpg": b"junk",
    })

    job = import_zip(client, reviewer, data)

    assert job.status == "done"
    assert (job.total, job.processed, job.created_images) == (5, 5, 2)
    rejected = {r["path"]: r["reason"] for r in job.rejected}
    assert set(rejected) == {"flamingo/broken.jpg", "llama/empty.jpg", "dalmatian/readme.txt"}
    assert "not an image" in rejected["flamingo/broken.jpg"]
    assert "empty" in rejected["llama/empty.jpg"]
    imported = Annotation.objects.filter(role="import", kind="imported")
    assert sorted(imported.values_list("label", flat=True)) == ["dalmatian", "flamingo"]
    assert all(a.source.startswith(f"import {job.id}: ") for a in imported)


def test_it_creates_classes_it_does_not_know(client, species, reviewer):
    job = import_zip(client, reviewer, make_zip({"okapi/o.png": make_image_bytes("PNG")}))

    assert job.status == "done"
    assert Species.objects.filter(name="okapi", active=True).exists()
    assert "okapi" in ModelVersion.objects.get(status="production").card["classes"]


def test_it_imports_once_when_the_task_is_delivered_twice(client, species, reviewer):
    job = import_zip(client, reviewer, make_zip({"dalmatian/a.jpg": demo_photo("dalmatian").read_bytes()}))

    assert imports.import_run(job_id=job.id) is None
    assert Annotation.objects.filter(role="import").count() == 1


def test_it_refuses_a_file_that_is_not_a_zip(client, species, reviewer):
    client.force_login(reviewer)
    response = client.post("/api/imports/", {"file": SimpleUploadedFile("labels.zip", b"not a zip at all")})

    assert response.status_code == 400
    assert "zip" in response.json()["detail"]
    assert not ImportJob.objects.exists()


def test_it_ranks_imported_labels_below_annotators(client, species, reviewer, django_user_model):
    import_zip(client, reviewer, make_zip({"dalmatian/a.jpg": demo_photo("dalmatian").read_bytes()}))
    image = Image.objects.get()
    annotator = django_user_model.objects.create_user("ann")
    Annotation.objects.create(image=image, kind="corrected", role="annotator", user=annotator,
                              species=Species.objects.get(name="dog"), label="dog")

    assert selectors.current_label(image).label == "dog"


def test_it_exports_and_reimports_the_same_labels(client, species, reviewer, django_user_model):
    import_zip(client, reviewer, make_zip({
        "dalmatian/a.jpg": demo_photo("dalmatian").read_bytes(),
        "flamingo/b.jpg": demo_photo("flamingo").read_bytes(),
        "starfish/c.jpg": demo_photo("starfish").read_bytes(),
        "other/d.png": make_image_bytes("PNG", color=(0, 0, 255)),
    }))
    # A later annotator correction must win in the export too.
    annotator = django_user_model.objects.create_user("ann")
    starfish = Image.objects.get(annotations__label="starfish")
    Annotation.objects.create(image=starfish, kind="corrected", role="annotator", user=annotator,
                              species=Species.objects.get(name="llama"), label="llama")
    before = current_by_sha()
    exported = client.get("/api/export/?kind=zip")
    assert exported.status_code == 200
    assert exported["Content-Type"] == "application/zip"

    # A fresh database: nothing of the above is left.
    Annotation.objects.all().delete()
    ImportJob.objects.all().delete()
    Upload.objects.all().delete()
    Prediction.objects.all().delete()
    Embedding.objects.all().delete()
    Image.objects.all().delete()
    assert current_by_sha() == {}

    import_zip(client, reviewer, exported.content)

    assert current_by_sha() == before
    assert sorted(before.values()) == ["dalmatian", "flamingo", "llama", "other"]


def test_it_exports_a_csv_with_provenance(client, species, reviewer):
    import_zip(client, reviewer, make_zip({"dalmatian/a.jpg": demo_photo("dalmatian").read_bytes()}))

    response = client.get("/api/export/?kind=csv")

    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    assert rows[0]["label"] == "dalmatian"
    assert rows[0]["annotator"] == "rita"
    assert rows[0]["source"].startswith("import ")
    assert rows[0]["path"].startswith("dalmatian/")


def test_it_exports_the_whole_history_as_json(client, species, reviewer, django_user_model):
    import_zip(client, reviewer, make_zip({"dalmatian/a.jpg": demo_photo("dalmatian").read_bytes()}))
    image = Image.objects.get()
    annotator = django_user_model.objects.create_user("ann")
    decision = Annotation.objects.create(image=image, kind="corrected", role="annotator", user=annotator,
                                         species=Species.objects.get(name="dog"), label="dog")
    Annotation.objects.create(image=image, kind="undo", role="annotator", user=annotator, reverts=decision,
                              label="dog")

    history = json.loads(client.get("/api/export/?kind=json").content)["annotations"]

    assert [a["kind"] for a in history] == ["imported", "corrected", "undo"]
    assert history[2]["reverts"] == history[1]["id"]
    assert {a["image_sha256"] for a in history} == {image.sha256}
