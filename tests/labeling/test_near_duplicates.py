"""Near-duplicates: an upload whose features match an earlier image's is stored, flagged and
linked; the browser filters them; a snapshot keeps each group on one side of the split."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance

from classifier import predictions, uploads
from classifier.models import Species
from classifier.training import snapshots
from labeling import summaries
from labeling.models import ImageSummary
from tests.helpers import demo_photo
from tests.labeling.factories import annotate, cluster_embedding, own_split, predicted_image

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_similarity")]



def brighter_copy(data: bytes) -> bytes:
    """The same photo 5% brighter, re-encoded: other bytes, another sha256."""
    image = ImageEnhance.Brightness(PILImage.open(io.BytesIO(data)).convert("RGB")).enhance(1.05)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def upload_and_predict(user, name: str, data: bytes):
    image = uploads.image_upload(user=user, filename=name, data=data).image
    predictions.image_classify(image_id=image.id)
    return image


def test_a_near_duplicate_upload_is_flagged_linked_and_shown(client, species, alice, reviewer):
    original_path, other_path = demo_photo("dalmatian", 0), demo_photo("flamingo", 0)
    original = upload_and_predict(alice, original_path.name, original_path.read_bytes())
    annotate(image=original, kind="imported", role="import", species=Species.objects.get(name="dalmatian"))
    other = upload_and_predict(alice, other_path.name, other_path.read_bytes())

    copy = upload_and_predict(alice, "copy.jpg", brighter_copy(original_path.read_bytes()))

    assert copy.id != original.id  # stored, never dropped
    assert ImageSummary.objects.get(image=copy).near_duplicate_of_id == original.id
    assert ImageSummary.objects.get(image=other).near_duplicate_of_id is None
    client.force_login(alice)  # the uploader sees the link on the image page
    page = client.get(f"/images/{copy.id}/").content.decode()
    assert f'href="/images/{original.id}/"' in page and "labelled dalmatian" in page
    client.force_login(reviewer)
    listed = [i["id"] for i in client.get("/api/images/", {"near_duplicate": "true"}).json()["results"]]
    assert listed == [copy.id]



def test_an_uploader_never_learns_of_another_users_near_duplicate(client, species, alice, bob, reviewer):
    path = demo_photo("dalmatian", 0)
    original = upload_and_predict(alice, path.name, path.read_bytes())
    own = upload_and_predict(bob, "mine.jpg", demo_photo("flamingo", 0).read_bytes())
    copy = upload_and_predict(bob, "copy.jpg", brighter_copy(path.read_bytes()))
    assert ImageSummary.objects.get(image=copy).near_duplicate_of_id == original.id  # linked for the dataset

    client.force_login(bob)
    listed = {i["id"]: i for i in client.get("/api/images/").json()["results"]}
    assert set(listed) == {own.id, copy.id} and listed[copy.id]["near_duplicate_of"] is None
    assert client.get("/api/images/", {"near_duplicate": "true"}).json()["results"] == []
    for page in (client.get("/images/").content.decode(), client.get(f"/images/{copy.id}/").content.decode()):
        assert "· near-duplicate" not in page and 'id="near-duplicate"' not in page
        assert f"/images/{original.id}/" not in page
    client.force_login(reviewer)  # who sees every image sees the link
    [linked] = client.get("/api/images/", {"near_duplicate": "true"}).json()["results"]
    assert linked["near_duplicate_of"] == original.id



def test_a_snapshot_never_splits_a_near_duplicate_group(settings, species):
    settings.TRAINING_MIN_PER_CLASS = 3
    rng = np.random.default_rng(7)
    names = ["dog", "cat"]
    groups = []
    for g in range(16):
        members = [predicted_image(version=species, embedding=cluster_embedding(g, rng=rng, spread=0.001))
                   for _ in range(3)]
        for image in members:
            annotate(image=image, kind="imported", role="import", species=Species.objects.get(name=names[g % 2]))
        groups.append(members)

    flagged = summaries.near_duplicates_flag([im.id for members in groups for im in members])

    assert sorted(flagged) == sorted(im.id for members in groups for im in members[1:])
    # Each image's own hash would have put some group on both sides: the grouping is what holds them.
    assert any(len({own_split(im.sha256, settings) for im in members}) > 1 for members in groups)
    snapshot = snapshots.snapshot_create()
    split_of = {item[0]: item[3] for item in snapshot.items}
    for members in groups:
        assert len({split_of[im.id] for im in members}) == 1
        assert split_of[members[0].id] == own_split(members[0].sha256, settings)  # the first image never moves
    browser = dict(ImageSummary.objects.values_list("image_id", "split"))
    assert browser == split_of  # the browser's split filter agrees with the snapshot
