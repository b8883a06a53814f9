"""Hostile or out-of-range inputs answer a clear 4xx and never fail more than the bad part."""

import csv
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from classifier import uploads
from classifier.models import Image, ModelVersion, Species, TrainingRun
from labeling.models import Annotation, ImportJob
from tests.helpers import demo_photo, logged_in_member, make_image_bytes
from tests.labeling.test_import_export import import_zip, make_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewer(client, django_user_model):
    return logged_in_member(client, django_user_model, "rita", "reviewer")


MALFORMED = ["abc", "null,null", "-1", "1.5", "99999999999999999999", "%00", "1e3"]
ROUTES = ["/api/images/{}/", "/api/species/{}/", "/api/images/{}/history/", "/api/images/{}/feedback/",
          "/api/jobs/{}/", "/api/training/runs/{}/", "/api/models/{}/", "/api/imports/{}/",
          "/api/review/decisions/{}/reopen/"]


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_ids_answer_404_json(client, staff, route):
    client.force_login(staff)
    for bad in MALFORMED:
        response = client.get(route.format(bad))
        assert response.status_code == 404, (route, bad)
        assert response["Content-Type"] == "application/json", (route, bad)
        assert response.json()["detail"]


def test_an_unknown_api_path_answers_json_and_a_page_answers_html(client, staff):
    client.force_login(staff)
    assert client.get("/api/nothing-here/").json() == {"detail": "Not found."}
    assert client.get("/images/abc/")["Content-Type"].startswith("text/html")


def test_a_long_class_folder_is_rejected_per_file(client, species, reviewer):
    long_name = "a" * 101
    job = import_zip(client, reviewer, make_zip({
        f"{long_name}/x.jpg": demo_photo("dalmatian").read_bytes(),
        "flamingo/y.jpg": demo_photo("flamingo").read_bytes(),
    }))
    assert job.status == ImportJob.Status.DONE
    assert job.created_images == 1
    [rejected] = job.rejected
    assert rejected["path"] == f"{long_name}/x.jpg"
    assert "101 characters" in rejected["reason"] and "100" in rejected["reason"]
    assert not Species.objects.filter(name=long_name).exists()
    assert Image.objects.count() == 1


def test_an_import_creates_classes_only_for_images_it_stored(client, species, reviewer):
    versions = ModelVersion.objects.count()
    job = import_zip(client, reviewer, make_zip({
        "newclass/broken.jpg": b"not an image",
        "newclass/notes.txt": b"hello",
    }))
    assert job.status == ImportJob.Status.DONE
    assert len(job.rejected) == 2
    assert not Species.objects.filter(name="newclass").exists()
    assert ModelVersion.objects.count() == versions  # no new zero-shot version

    job = import_zip(client, reviewer, make_zip({
        "newclass/broken.jpg": b"not an image",
        "otherclass/good.jpg": demo_photo("okapi").read_bytes(),
    }))
    assert set(Species.objects.filter(name__in=["newclass", "otherclass"]).values_list("name", flat=True)) == {
        "otherclass"}
    assert Annotation.objects.get(image__annotations__source__contains="good.jpg").label == "otherclass"


def test_an_import_over_the_size_limit_is_refused(client, species, reviewer, settings):
    settings.IMPORT_MAX_BYTES = 4096
    data = make_zip({"flamingo/y.jpg": demo_photo("flamingo").read_bytes()})
    response = client.post("/api/imports/", {"file": SimpleUploadedFile("big.zip", data)})
    assert response.status_code == 400
    assert "limit is 4,096" in response.json()["detail"]
    assert not ImportJob.objects.exists()


@pytest.mark.parametrize("options, named", [
    ({"batch_size": 100000000}, "batch_size"),
    ({"epochs": 0}, "epochs"),
    ({"epochs": 100000}, "epochs"),
    ({"epochs": 2.5}, "epochs"),
    ({"epochs": "many"}, "epochs"),
    ({"patience": True}, "patience"),
    ({"seed": -1}, "seed"),
    ({"seed": [1]}, "seed"),
    ({"learning_rate": 1.0}, "learning_rate"),
])
def test_training_options_out_of_bounds_answer_400_naming_the_option(client, species, reviewer, options, named):
    response = client.post("/api/training/runs/", {"mode": "head", "options": options}, content_type="application/json")
    assert response.status_code == 400, response.content
    assert named in response.json()["detail"]
    assert not TrainingRun.objects.exists()


def test_training_options_within_bounds_are_kept(client, species, reviewer, label_images):
    label_images({"dog": 12, "cat": 12})
    response = client.post("/api/training/runs/", {"mode": "head", "options": {"epochs": "3", "batch_size": 16.0}},
                           content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["options"] == {"epochs": 3, "batch_size": 16}


def labelled_upload(user, label: str, photo: str) -> Image:
    image = uploads.image_upload(user=user, filename="p.jpg", data=demo_photo(photo).read_bytes()).image
    target = Species.objects.create(name=label)
    Annotation.objects.create(image=image, kind=Annotation.Kind.IMPORTED, role=Annotation.Role.IMPORT,
                              species=target, label=label, user=user)
    return image


def test_exports_escape_formulas_and_sanitise_folder_names(client, species, reviewer):
    labelled_upload(reviewer, "=1+2", "dalmatian")
    labelled_upload(reviewer, "../../../tmp/x", "flamingo")
    labelled_upload(reviewer, "@sum(a1)", "okapi")

    rows = list(csv.DictReader(io.StringIO(client.get("/api/export/?kind=csv").content.decode())))
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), row
    assert {row["label"] for row in rows} == {"'=1+2", "../../../tmp/x", "'@sum(a1)"}

    names = zipfile.ZipFile(io.BytesIO(client.get("/api/export/?kind=zip").content)).namelist()
    assert len(names) == 3
    for name in names:
        parts = name.split("/")
        assert len(parts) == 2 and parts[0] not in ("", ".", "..") and "\\" not in name, name
    assert {row["path"].lstrip("'") for row in rows} == set(names)


@pytest.fixture(scope="module")
def sixteen_bit_png() -> bytes:
    """The issue's file: 7000x7000 16-bit greyscale, about 100 KB, under the pixel limit."""
    out = io.BytesIO()
    PILImage.new("I;16", (7000, 7000), 1000).save(out, format="PNG")
    return out.getvalue()


def upload(client, name: str, data: bytes):
    return client.post("/api/images/", {"files": [SimpleUploadedFile(name, data)]})


def test_an_image_too_big_to_decode_is_refused(client, alice, sixteen_bit_png):
    client.force_login(alice)
    assert len(sixteen_bit_png) < 1_000_000
    response = upload(client, "deep.png", sixteen_bit_png)
    assert response.status_code == 400
    assert "decoded" in response.json()["errors"]["deep.png"]
    assert not Image.objects.exists()


def test_a_16_bit_image_within_the_budget_is_converted(client, alice):
    client.force_login(alice)
    response = upload(client, "deep.png", make_image_bytes("PNG", size=(300, 200), mode="I;16", color=65535))
    assert response.status_code == 201
    image = Image.objects.get()
    assert (image.width, image.height, image.original_mode) == (300, 200, "I;16")


def test_a_jpeg_over_the_budget_is_decoded_at_a_reduced_scale(client, alice, settings):
    settings.UPLOAD_MAX_DECODED_BYTES = 2 * 1024 * 1024  # 1600x1200 RGB needs 7.7 MB at full scale
    client.force_login(alice)
    response = upload(client, "big.jpg", make_image_bytes("JPEG", size=(1600, 1200)))
    assert response.status_code == 201, response.content
    image = Image.objects.get()
    assert (image.width, image.height) == (1600, 1200)  # the file's own size
    with PILImage.open(image.preview.open("rb")) as preview:
        assert max(preview.size) <= settings.PREVIEW_SIZE
    settings.UPLOAD_MAX_DECODED_BYTES = 1024 * 1024
    refused = upload(client, "png.png", make_image_bytes("PNG", size=(1600, 1200)))
    assert refused.status_code == 400


def test_an_unknown_status_filter_answers_400(client, alice):
    client.force_login(alice)
    response = client.get("/api/images/?status=AAA")
    assert response.status_code == 400
    assert "AAA" in response.json()["detail"]
    assert client.get("/api/images/?status=queued").status_code == 200


def test_a_page_that_is_not_one_whole_number_answers_404(client, alice):
    client.force_login(alice)
    # Page-numbered lists (the image list pages by cursor: its broken cursors answer 400).
    for query in ["page=", "page=abc", "page=1&page=2", "page=-1"]:
        response = client.get(f"/api/species/?{query}")
        assert response.status_code == 404, query
        assert response.json()["detail"]
    assert client.get("/api/species/?page=1").status_code == 200
    assert client.get("/api/images/?cursor=zz").status_code == 400
