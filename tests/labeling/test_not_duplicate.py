"""A reviewer marks a flagged pair "not a duplicate" (the API and the image page's form): the link
goes, who and when is recorded, the browser's filter and the snapshot stop grouping the pair, and
a later check never links that pair again (another match still can be)."""

import numpy as np
import pytest

from classifier.models import Species
from classifier.training import snapshots
from labeling import summaries
from labeling.models import ImageSummary
from tests.labeling.factories import annotate, cluster_embedding, own_split, predicted_image

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_similarity")]




def copies(version, centre: int, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [predicted_image(version=version, embedding=cluster_embedding(centre, rng=rng, spread=0.001))
            for _ in range(n)]


def near_duplicate_ids(client) -> list[int]:
    return [i["id"] for i in client.get("/api/images/", {"near_duplicate": "true"}).json()["results"]]


def test_a_reviewer_marks_a_pair_not_a_duplicate_over_the_api(client, settings, species, reviewer, annotator):
    first, second = copies(species, 3, 2, seed=8)
    assert summaries.near_duplicates_flag([second.id]) == [second.id]
    client.force_login(annotator)
    assert client.post(f"/api/images/{second.id}/not-duplicate/").status_code == 403
    assert ImageSummary.objects.get(image=second).near_duplicate_of_id == first.id
    client.force_login(reviewer)
    assert near_duplicate_ids(client) == [second.id]

    response = client.post(f"/api/images/{second.id}/not-duplicate/")

    assert response.status_code == 201
    body = response.json()
    assert (body["image"], body["other"], body["user"]) == (second.id, first.id, "rita") and body["created"]
    row = ImageSummary.objects.get(image=second)
    assert (row.near_duplicate_of_id, row.split) == (None, own_split(second.sha256, settings))
    assert near_duplicate_ids(client) == []
    assert summaries.near_duplicates_flag([second.id]) == []  # a re-check respects the mark
    assert ImageSummary.objects.get(image=second).near_duplicate_of_id is None
    assert client.post(f"/api/images/{second.id}/not-duplicate/").status_code == 400  # nothing linked now


def test_the_schema_documents_the_mark(client, reviewer):
    client.force_login(reviewer)
    schema = client.get("/api/schema/", {"format": "json"}).json()
    responses = schema["paths"]["/api/images/{image_id}/not-duplicate/"]["post"]["responses"]
    assert responses["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/NotDuplicate")
    assert set(schema["components"]["schemas"]["NotDuplicate"]["properties"]) == {"image", "other", "user", "created"}


def test_a_mark_covers_its_pair_only(client, species, reviewer):
    first, second, third = copies(species, 4, 3, seed=9)
    summaries.near_duplicates_flag([second.id, third.id])
    linked = ImageSummary.objects.get(image=third).near_duplicate_of_id
    other = ({first.id, second.id} - {linked}).pop()
    client.force_login(reviewer)

    assert client.post(f"/api/images/{third.id}/not-duplicate/").status_code == 201

    assert summaries.near_duplicates_flag([third.id]) == [third.id]  # another earlier copy still matches
    assert ImageSummary.objects.get(image=third).near_duplicate_of_id == other
    assert client.post(f"/api/images/{third.id}/not-duplicate/").status_code == 201
    assert summaries.near_duplicates_flag([third.id]) == []
    assert sorted(third.not_duplicate_marks.values_list("other_id", flat=True)) == sorted([first.id, second.id])


def test_the_image_page_form_marks_the_pair_and_shows_who_did(client, species, reviewer, annotator):
    first, second = copies(species, 5, 2, seed=10)
    summaries.near_duplicates_flag([second.id])
    page = f"/images/{second.id}/"
    form = f"/images/{second.id}/not-duplicate/"
    client.force_login(annotator)
    assert 'id="near-duplicate"' in client.get(page).content.decode()
    assert form not in client.get(page).content.decode()  # no form for a non-reviewer
    assert client.post(form).status_code == 403
    client.force_login(reviewer)
    assert f'action="{form}"' in client.get(page).content.decode()

    response = client.post(form)

    assert (response.status_code, response["Location"]) == (302, page)
    html = client.get(page).content.decode()
    assert 'id="near-duplicate"' not in html and f'action="{form}"' not in html
    assert f"Not a duplicate of <a href=\"/images/{first.id}/\">#{first.id}</a>: marked by rita" in html
    assert ImageSummary.objects.get(image=second).near_duplicate_of_id is None
    assert client.post(form).status_code == 302  # a second click changes nothing


def test_a_snapshot_stops_grouping_a_pair_marked_not_a_duplicate(client, settings, species, reviewer):
    settings.TRAINING_MIN_PER_CLASS = 3
    names = ["dog", "cat"]
    pairs = [copies(species, g, 2, seed=100 + g) for g in range(16)]
    for g, pair in enumerate(pairs):
        for image in pair:
            annotate(image=image, kind="imported", role="import", species=Species.objects.get(name=names[g % 2]))
    summaries.near_duplicates_flag([second.id for _, second in pairs])
    grouped = {item[0]: item[3] for item in snapshots.snapshot_create().items}
    assert all(grouped[first.id] == grouped[second.id] for first, second in pairs)
    client.force_login(reviewer)

    for _, second in pairs:
        assert client.post(f"/api/images/{second.id}/not-duplicate/").status_code == 201

    split_of = {item[0]: item[3] for item in snapshots.snapshot_create().items}
    assert split_of == {image.id: own_split(image.sha256, settings) for pair in pairs for image in pair}
    # Their own hashes put some pair on both sides: the snapshot no longer holds them together.
    assert any(split_of[first.id] != split_of[second.id] for first, second in pairs)
    assert dict(ImageSummary.objects.values_list("image_id", "split")) == split_of  # the browser agrees
