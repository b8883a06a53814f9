"""Private media: images, previews, thumbnails and import zips only for users allowed to see them."""

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from classifier import uploads
from labeling import imports
from labeling.models import ImportJob
from tests.helpers import demo_photo, logged_in_member
from tests.labeling.test_import_export import make_zip

pytestmark = pytest.mark.django_db

KINDS = ["original", "preview", "thumbnail"]


@pytest.fixture
def alices_image(alice):
    return uploads.image_upload(user=alice, filename="d.jpg", data=demo_photo("dalmatian").read_bytes()).image


def media_url(image, kind: str) -> str:
    return getattr(image, kind).url


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.mark.parametrize("kind", KINDS)
def test_anonymous_and_other_users_get_no_image_file(client, alices_image, bob, kind):
    url = media_url(alices_image, kind)
    assert url.startswith("/media/images/")
    assert client.get(url).status_code == 404  # anonymous
    client.force_login(bob)  # a user who did not upload it and holds no role
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("kind", KINDS)
def test_the_uploader_gets_the_bytes(client, alices_image, alice, kind):
    client.force_login(alice)
    response = client.get(media_url(alices_image, kind))
    assert response.status_code == 200
    with default_storage.open(getattr(alices_image, kind).name, "rb") as f:
        assert body(response) == f.read()
    assert response["Content-Type"] == "image/jpeg"
    assert "private" in response["Cache-Control"]


@pytest.mark.parametrize("role", ["annotator", "reviewer"])
def test_annotators_and_reviewers_see_every_image(client, alices_image, django_user_model, role):
    logged_in_member(client, django_user_model, "member", role)
    for kind in KINDS:
        assert client.get(media_url(alices_image, kind)).status_code == 200


def test_staff_see_every_image(client, alices_image, staff):
    client.force_login(staff)
    assert client.get(media_url(alices_image, "original")).status_code == 200


def test_a_second_uploader_of_the_same_photo_sees_it(client, alices_image, bob):
    uploads.image_upload(user=bob, filename="mine.jpg", data=demo_photo("dalmatian").read_bytes())
    client.force_login(bob)
    assert client.get(media_url(alices_image, "original")).status_code == 200


def test_files_that_belong_to_no_record_are_never_served(client, staff, alices_image):
    default_storage.save("images/zz/secret.txt", SimpleUploadedFile("s", b"secret"))
    default_storage.save("other/notes.txt", SimpleUploadedFile("s", b"secret"))
    client.force_login(staff)
    for url in ["/media/images/zz/secret.txt", "/media/other/notes.txt", "/media/images/../other/notes.txt",
                "/media/images/%2e%2e/other/notes.txt", "/media/", "/media/images/"]:
        assert client.get(url).status_code == 404, url


@pytest.fixture
def queued_import(client, django_user_model):
    """An import that has not run yet: its zip is stored."""
    rita = logged_in_member(client, django_user_model, "rita", "reviewer")
    data = make_zip({"llama/a.jpg": demo_photo("llama").read_bytes()})
    response = client.post("/api/imports/", {"file": SimpleUploadedFile("labels.zip", data)})
    assert response.status_code == 202, response.content
    client.logout()
    return rita, ImportJob.objects.get(id=response.json()["id"]), data


def test_an_import_zip_goes_only_to_its_importer_and_staff(client, queued_import, django_user_model, staff):
    rita, job, data = queued_import
    url = job.archive.url
    assert url.startswith("/media/imports/")
    assert client.get(url).status_code == 404  # anonymous
    logged_in_member(client, django_user_model, "rex", "reviewer")  # another reviewer
    assert client.get(url).status_code == 404
    client.force_login(rita)
    response = client.get(url)
    assert response.status_code == 200
    assert body(response) == data
    assert response["Content-Disposition"].startswith("attachment")
    client.force_login(staff)
    assert client.get(url).status_code == 200


def test_the_zip_is_deleted_when_its_import_ends(client, queued_import, species):
    rita, job, _ = queued_import
    assert default_storage.exists(job.archive.name)
    imports.import_run(job_id=job.id)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.DONE
    assert not default_storage.exists(job.archive.name)
    client.force_login(rita)
    assert client.get(job.archive.url).status_code == 404


def test_behind_nginx_the_file_is_handed_over_with_x_accel_redirect(client, settings, alices_image, alice):
    settings.MEDIA_ACCEL_REDIRECT_PREFIX = "/protected-media/"
    client.force_login(alice)
    response = client.get(media_url(alices_image, "thumbnail"))
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{alices_image.thumbnail.name}"
    assert response.content == b""
    client.force_login(alice.__class__.objects.create_user("eve"))
    assert "X-Accel-Redirect" not in client.get(media_url(alices_image, "thumbnail"))


def test_pages_and_the_api_link_to_media_that_loads(client, alices_image, alice):
    client.force_login(alice)
    detail = client.get(f"/api/images/{alices_image.id}/").json()
    for key in ["url", "preview_url", "thumbnail_url"]:
        assert client.get(detail[key]).status_code == 200, key
    page = client.get(f"/images/{alices_image.id}/").content.decode()
    assert alices_image.preview.url in page


def test_uploading_a_copy_of_someone_elses_photo_reveals_nothing(client, alices_image, bob):
    client.force_login(bob)
    data = demo_photo("dalmatian").read_bytes()
    first = client.post("/api/images/", {"files": [SimpleUploadedFile("copy.jpg", data)]})
    assert first.status_code == 201
    answer = first.json()[0]
    # The same answer as for a photo nobody had sent: created, and bob's own upload from now on.
    assert answer["created"] is True
    assert set(answer) == {"id", "status", "created", "filename", "url"}
    again = client.post("/api/images/", {"files": [SimpleUploadedFile("copy.jpg", data)]}).json()[0]
    assert again["created"] is False  # bob's own repeat is a repeat
    assert again["id"] == answer["id"]


def test_a_copy_of_someone_elses_photo_is_the_uploaders_own_fresh_image(client, alices_image, alice, bob, species):
    from django.utils import timezone

    from classifier.models import Image, Species
    from labeling.models import Annotation
    from tests.labeling.factories import annotate, prediction_make

    # Alice's photo was predicted and labelled long ago.
    Image.objects.filter(id=alices_image.id).update(status="predicted")
    prediction_make(image=alices_image, version=species, probs=[1 / len(species.classes)] * len(species.classes))
    annotate(image=alices_image, kind=Annotation.Kind.IMPORTED, role=Annotation.Role.IMPORT,
             species=Species.objects.get(name="dalmatian"))
    client.force_login(bob)

    answer = client.post("/api/images/", {"files": [SimpleUploadedFile("copy.jpg", demo_photo("dalmatian")
                                                                        .read_bytes())]}).json()[0]

    assert answer["id"] != alices_image.id and answer["status"] == "queued" and answer["created"] is True
    detail = client.get(f"/api/images/{answer['id']}/").json()
    assert detail["status"] == "queued" and detail["prediction"] is None
    assert (timezone.now() - Image.objects.get(id=answer["id"]).created).total_seconds() < 60
    assert [i["id"] for i in client.get("/api/images/").json()["results"]] == [answer["id"]]
    assert client.get(f"/api/images/{alices_image.id}/").status_code in (403, 404)
    page = client.get(f"/images/{answer['id']}/").content.decode()
    assert f"#{alices_image.id}" not in page and "alice" not in page
    assert client.get(detail["url"]).status_code == 200  # the same file on disk, served as bob's
    # Alice's image is as it was: hers alone, predicted, labelled.
    alices_image.refresh_from_db()
    assert alices_image.status == "predicted" and alices_image.annotations.count() == 1
    assert list(alices_image.uploads.values_list("user__username", flat=True)) == ["alice"]
    assert not Image.objects.get(id=answer["id"]).annotations.exists()
    client.force_login(alice)
    again = client.post("/api/images/", {"files": [SimpleUploadedFile("again.jpg", demo_photo("dalmatian")
                                                                       .read_bytes())]}).json()[0]
    assert (again["id"], again["created"]) == (alices_image.id, False)


def test_whoever_sees_every_image_lands_on_the_shared_one(client, alices_image, staff):
    client.force_login(staff)
    answer = client.post("/api/images/", {"files": [SimpleUploadedFile("s.jpg", demo_photo("dalmatian")
                                                                        .read_bytes())]}).json()[0]
    assert answer["id"] == alices_image.id  # staff (and annotators, reviewers, imports) learn nothing new


def test_api_clients_fetch_media_with_their_token(client, alices_image, alice, bob):
    from rest_framework.authtoken.models import Token

    url = media_url(alices_image, "original")
    assert client.get(url, HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}").status_code == 200
    assert client.get(url, HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}").status_code == 404
    assert client.get(url, HTTP_AUTHORIZATION="Token not-a-token").status_code == 404


def test_with_a_remote_storage_the_allowed_user_is_sent_to_its_signed_url(client, settings, alice, bob):
    # InMemoryStorage has no local paths, like S3; its url() stands in for a presigned URL.
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.InMemoryStorage",
        "OPTIONS": {"base_url": "https://bucket.example.org/"}}}
    image = uploads.image_upload(user=alice, filename="d.jpg", data=demo_photo("okapi").read_bytes()).image
    url = f"/media/{image.original.name}"
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"https://bucket.example.org/{image.original.name}"
    client.force_login(bob)
    assert client.get(url).status_code == 404
