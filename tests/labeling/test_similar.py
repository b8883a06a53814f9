"""More like this: nearest images by stored embedding, in order, with labels; permissions; a
query by an uploaded photo stores nothing."""

import numpy as np
import pytest

from classifier import predictions, uploads
from classifier.models import Embedding, Image, Prediction, Species
from tests.helpers import demo_photo
from tests.labeling.factories import annotate, cluster_embedding, predicted_image, with_margin

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_similarity")]



def brute_force(query_id: int, among: list[int]) -> list[int]:
    vectors = {i: np.frombuffer(bytes(v), dtype="<f4") for i, v in
               Embedding.objects.filter(image_id__in=among).values_list("image_id", "vector")}
    q = vectors[query_id] / np.linalg.norm(vectors[query_id])
    scores = {i: float(v @ q / np.linalg.norm(v)) for i, v in vectors.items() if i != query_id}
    return sorted(scores, key=lambda i: (-scores[i], i))


def test_similar_images_come_back_nearest_first_with_their_labels(client, species, reviewer):
    rng = np.random.default_rng(3)
    images = {c: [predicted_image(version=species, probs=with_margin(species, 0.3),
                                  embedding=cluster_embedding(c, rng=rng, spread=0.02 * (n + 1)))
                  for n in range(4)] for c in range(3)}
    annotate(image=images[0][1], kind="imported", role="import", species=Species.objects.get(name="dog"))
    client.force_login(reviewer)
    query = images[0][0]

    response = client.get(f"/api/images/{query.id}/similar/", {"k": 5})

    assert response.status_code == 200, response.content
    hits = response.json()
    all_ids = [im.id for group in images.values() for im in group]
    assert [h["id"] for h in hits] == brute_force(query.id, all_ids)[:5]
    assert {h["id"] for h in hits[:3]} == {im.id for im in images[0][1:]}  # its own cluster first
    assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
    assert next(h for h in hits if h["id"] == images[0][1].id)["label"] == "dog"


def test_an_uploader_finds_only_their_own_images(client, species, uploader):
    rng = np.random.default_rng(4)
    own = [predicted_image(version=species, embedding=cluster_embedding(0, rng=rng), uploader=uploader)
           for _ in range(2)]
    others = [predicted_image(version=species, embedding=cluster_embedding(0, rng=rng)) for _ in range(3)]
    client.force_login(uploader)

    hits = client.get(f"/api/images/{own[0].id}/similar/").json()

    assert [h["id"] for h in hits] == [own[1].id]
    assert client.get(f"/api/images/{others[0].id}/similar/").status_code == 403


def test_new_embeddings_are_found_without_a_restart(client, species, reviewer):
    rng = np.random.default_rng(5)
    first = predicted_image(version=species, embedding=cluster_embedding(1, rng=rng))
    client.force_login(reviewer)
    assert client.get(f"/api/images/{first.id}/similar/").json() == []

    second = predicted_image(version=species, embedding=cluster_embedding(1, rng=rng))

    assert [h["id"] for h in client.get(f"/api/images/{first.id}/similar/").json()] == [second.id]


def test_a_query_by_photo_finds_the_same_photo_and_stores_nothing(client, species, reviewer, alice):
    photos = [demo_photo("dalmatian", 0), demo_photo("flamingo", 0), demo_photo("dalmatian", 1)]
    ids = []
    for path in photos:
        image = uploads.image_upload(user=alice, filename=path.name, data=path.read_bytes()).image
        predictions.image_classify(image_id=image.id)
        ids.append(image.id)
    client.force_login(reviewer)
    counts = (Image.objects.count(), Prediction.objects.count(), Embedding.objects.count())

    with photos[2].open("rb") as f:
        response = client.post("/api/similar/", {"file": f, "k": 3})

    assert response.status_code == 200, response.content
    hits = response.json()
    assert hits[0]["id"] == ids[2] and hits[0]["similarity"] > 0.999  # the same photo, stored earlier
    assert [h["id"] for h in hits[1:]] == brute_force(ids[2], ids)  # then the others, nearest first
    assert (Image.objects.count(), Prediction.objects.count(), Embedding.objects.count()) == counts


def test_a_file_that_is_no_photo_is_a_400(client, species, reviewer):
    client.force_login(reviewer)
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = client.post("/api/similar/", {"file": SimpleUploadedFile("x.jpg", b"not an image")})

    assert response.status_code == 400
