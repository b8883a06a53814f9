"""Uploading through the HTTP API: bad files are refused whole, odd but valid ones accepted.

Also the API's edges: who may upload and see what, pagination, token auth, the schema and
its offline docs page.
"""

import io
import re

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.authtoken.models import Token

from classifier import uploads
from classifier.models import Image, Upload
from tests.helpers import demo_photo, make_image_bytes

pytestmark = pytest.mark.django_db

URL = "/api/images/"


@pytest.fixture
def media_dir(tmp_path):
    # This module's own, empty media folder, so "nothing stored" can be checked on disk.
    path = tmp_path / "media"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("1", (20000, 20000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


@pytest.fixture
def dalmatian_file():
    return SimpleUploadedFile("dalmatian.jpg", demo_photo("dalmatian").read_bytes(), content_type="image/jpeg")


def upload(client, *files, **extra):
    return client.post(URL, {"files": list(files)}, **extra)


def jpeg_file(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def stored_files(media_dir) -> list:
    return [p for p in media_dir.rglob("*") if p.is_file()]


def assert_rejected(response, name: str, reason: str, media_dir) -> None:
    assert response.status_code == 400
    body = response.json()
    assert "Nothing was stored" in body["detail"]
    assert name in body["errors"]
    assert reason in body["errors"][name]
    assert Image.objects.count() == 0
    assert Upload.objects.count() == 0
    assert stored_files(media_dir) == []


def accepted_preview(response) -> PILImage.Image:
    assert response.status_code == 201, response.content
    (result,) = response.json()
    assert result["created"] is True
    image = Image.objects.get(id=result["id"])
    with default_storage.open(image.preview.name, "rb") as f:
        preview = PILImage.open(io.BytesIO(f.read()))
        preview.load()
    assert preview.format == "JPEG"
    assert preview.mode == "RGB"
    return preview


# --- bad files: 4xx naming the file, nothing stored -----------------------------------------

def test_it_rejects_text_with_a_jpg_name(client, alice, media_dir):
    client.force_login(alice)
    response = upload(client, jpeg_file("notes.jpg", b"just some text, not a photo\n" * 10))
    assert_rejected(response, "notes.jpg", "not an image", media_dir)


def test_it_rejects_an_empty_file(client, alice, media_dir):
    client.force_login(alice)
    response = upload(client, jpeg_file("empty.jpg", b""))
    assert_rejected(response, "empty.jpg", "empty", media_dir)


def test_it_rejects_a_truncated_jpeg(client, alice, media_dir):
    client.force_login(alice)
    data = demo_photo("dalmatian").read_bytes()
    response = upload(client, jpeg_file("half.jpg", data[: len(data) // 2]))
    assert_rejected(response, "half.jpg", "truncated", media_dir)


def test_it_rejects_a_decompression_bomb(client, alice, media_dir, bomb_png):
    assert len(bomb_png) < 100_000  # 400 million pixels in a few tens of KB
    client.force_login(alice)
    response = upload(client, SimpleUploadedFile("bomb.png", bomb_png, content_type="image/png"))
    assert_rejected(response, "bomb.png", "pixels", media_dir)


def test_it_rejects_a_file_over_the_size_limit(client, alice, media_dir, settings, dalmatian_file):
    settings.UPLOAD_MAX_BYTES = 5000
    client.force_login(alice)
    response = upload(client, dalmatian_file)
    assert_rejected(response, "dalmatian.jpg", "limit is 5,000", media_dir)


def test_it_stores_nothing_from_a_batch_with_one_bad_file(client, alice, media_dir, dalmatian_file):
    client.force_login(alice)
    response = upload(client, dalmatian_file, jpeg_file("broken.jpg", b"\xff\xd8\xff\xe0 not really"))
    assert_rejected(response, "broken.jpg", "not an image", media_dir)
    assert list(response.json()["errors"]) == ["broken.jpg"]


def test_it_rejects_a_request_without_files(client, alice, media_dir):
    client.force_login(alice)
    response = client.post(URL, {})
    assert response.status_code == 400
    assert Image.objects.count() == 0


# --- odd but valid images: accepted, stored with an RGB preview ------------------------------

def test_it_accepts_a_cmyk_jpeg(client, alice):
    client.force_login(alice)
    data = make_image_bytes("JPEG", size=(40, 30), mode="CMYK", color=(0, 255, 255, 0))
    preview = accepted_preview(upload(client, jpeg_file("cmyk.jpg", data)))
    r, g, b = preview.getpixel((20, 15))
    assert r > 200 and g < 60 and b < 60
    assert Image.objects.get().original_mode == "CMYK"


def test_it_accepts_a_16_bit_png(client, alice):
    import numpy as np

    gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))
    out = io.BytesIO()
    PILImage.fromarray(gradient).save(out, format="PNG")
    client.force_login(alice)

    preview = accepted_preview(upload(client, SimpleUploadedFile("deep.png", out.getvalue(), content_type="image/png")))

    lo, hi = preview.convert("L").getextrema()
    assert lo < 30 and hi > 225  # a gradient, not clipped to white


def test_it_accepts_a_palette_png_with_transparency(client, alice):
    im = PILImage.new("P", (40, 40), 1)
    im.putpalette([0, 0, 0] + [20, 40, 200] + [0, 0, 0] * 254)
    im.paste(0, (0, 0, 20, 40))  # left half: the transparent index
    out = io.BytesIO()
    im.save(out, format="PNG", transparency=0)
    client.force_login(alice)

    preview = accepted_preview(upload(client, SimpleUploadedFile("pal.png", out.getvalue(), content_type="image/png")))

    assert all(v > 240 for v in preview.getpixel((5, 20)))  # transparent became white
    r, g, b = preview.getpixel((35, 20))
    assert b > 150 and r < 80


def test_it_accepts_a_greyscale_jpeg(client, alice):
    client.force_login(alice)
    data = make_image_bytes("JPEG", size=(40, 30), mode="L", color=90)
    preview = accepted_preview(upload(client, jpeg_file("grey.jpg", data)))
    r, g, b = preview.getpixel((20, 15))
    assert abs(r - 90) < 8 and r == g == b


def test_it_accepts_an_animated_gif_as_its_first_frame(client, alice):
    frames = [PILImage.new("RGB", (40, 40), (255, 0, 0)), PILImage.new("RGB", (40, 40), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    client.force_login(alice)

    preview = accepted_preview(upload(client, SimpleUploadedFile("anim.gif", out.getvalue(), content_type="image/gif")))

    r, g, b = preview.getpixel((20, 20))
    assert r > 200 and b < 60


def test_it_stores_the_original_a_preview_and_a_thumbnail(client, alice, media_dir, dalmatian_file):
    client.force_login(alice)
    response = upload(client, dalmatian_file)
    assert response.status_code == 201
    image = Image.objects.get()
    assert sorted(p.name for p in stored_files(media_dir)) == sorted(
        f"{image.sha256}{suffix}" for suffix in (".jpg", ".preview.jpg", ".thumb.jpg")
    )
    assert (media_dir / image.original.name).read_bytes() == demo_photo("dalmatian").read_bytes()


# --- who may do what ------------------------------------------------------------------------

def test_it_refuses_an_anonymous_upload(client, media_dir, dalmatian_file):
    response = upload(client, dalmatian_file)
    assert response.status_code in (401, 403)
    assert Image.objects.count() == 0
    assert stored_files(media_dir) == []


def test_it_sends_anonymous_visitors_of_the_upload_page_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_shows_the_upload_page_to_a_logged_in_user(client, alice):
    client.force_login(alice)
    assert client.get("/").status_code == 200


def test_it_stores_the_same_content_once(client, alice):
    client.force_login(alice)
    data = demo_photo("flamingo").read_bytes()
    first = upload(client, jpeg_file("a.jpg", data))
    second = upload(client, jpeg_file("b.jpg", data))

    assert first.status_code == second.status_code == 201
    assert first.json()[0]["created"] is True
    assert second.json()[0]["created"] is False
    assert second.json()[0]["id"] == first.json()[0]["id"]
    assert Image.objects.count() == 1
    assert sorted(Upload.objects.values_list("filename", flat=True)) == ["a.jpg", "b.jpg"]


@pytest.fixture
def alices_image(alice):
    return uploads.image_upload(user=alice, filename="d.jpg", data=demo_photo("dalmatian").read_bytes()).image


def test_it_shows_an_image_to_its_uploader(client, alice, alices_image):
    client.force_login(alice)
    response = client.get(f"{URL}{alices_image.id}/")
    assert response.status_code == 200
    assert response.json()["sha256"] == alices_image.sha256


def test_it_hides_an_image_from_another_user(client, bob, alices_image):
    client.force_login(bob)
    assert client.get(f"{URL}{alices_image.id}/").status_code in (403, 404)


def test_it_shows_any_image_to_staff(client, staff, alices_image):
    client.force_login(staff)
    assert client.get(f"{URL}{alices_image.id}/").status_code == 200


def test_it_leaves_other_users_images_out_of_the_list(client, bob, alices_image):
    client.force_login(bob)
    assert client.get(URL).json()["results"] == []


# --- listing --------------------------------------------------------------------------------

@pytest.fixture
def two_images(alice):
    return [
        uploads.image_upload(user=alice, filename=f"{label}.jpg", data=demo_photo(label).read_bytes()).image
        for label in ("dalmatian", "flamingo")
    ]


def test_it_paginates_the_list(client, alice, two_images):
    client.force_login(alice)
    body = client.get(URL, {"page_size": 1}).json()
    assert {"next", "previous"} <= set(body)
    assert len(body["results"]) == 1
    # Keyset pages (issue 12): the next page follows the cursor, no counts.
    body["results"] += client.get(body["next"]).json()["results"]
    assert sorted(r["id"] for r in body["results"]) == sorted(i.id for i in two_images)


def test_it_filters_the_list_by_status(client, alice, two_images):
    done, waiting = two_images
    Image.objects.filter(id=done.id).update(status=Image.Status.PREDICTED)
    client.force_login(alice)

    body = client.get(URL, {"status": "queued"}).json()

    assert [r["id"] for r in body["results"]] == [waiting.id]


# --- token auth, schema, docs ---------------------------------------------------------------

def test_it_accepts_a_token(client, alice, alices_image):
    token = Token.objects.create(user=alice)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [alices_image.id]


def test_it_accepts_an_upload_with_a_token(client, alice, dalmatian_file):
    token = Token.objects.create(user=alice)
    response = upload(client, dalmatian_file, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 201
    assert Upload.objects.get().user == alice


def test_it_refuses_a_wrong_token(client, alice):
    response = client.get(URL, HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code in (401, 403)


def test_it_serves_an_openapi_schema_with_the_upload_endpoint(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "post" in schema["paths"]["/api/images/"]
    assert "/api/images/{id}/" in schema["paths"]


def test_it_serves_api_docs_that_load_nothing_from_the_internet(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger" in html.lower()
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert assets  # the page does load its scripts and styles...
    external = [url for url in assets if re.match(r"(https?:)?//", url)]
    assert external == []  # ...from this server
