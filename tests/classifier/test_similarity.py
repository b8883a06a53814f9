"""classifier.similarity through its public API with the index forced on small data: it answers as
exact search does, finds new and late-committed rows, and drops deleted images."""

import numpy as np
import pytest
from django.conf import settings

from classifier import similarity
from classifier.models import Embedding, Image
from tests.labeling.factories import cluster_embedding, predicted_image

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _indexed(settings):
    settings.SIMILARITY_INDEX_MIN_ROWS = 20  # the index path, not exact search
    settings.SIMILARITY_RESYNC_SECONDS = 0  # check for deleted and late rows on every query
    similarity.forget()  # ids are reused between tests on a rolled-back database
    yield
    similarity.forget()


def images(species, per_centre: int, centres=range(4), seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for c in centres:
        for _ in range(per_centre):
            vector = cluster_embedding(c, rng=rng, spread=0.03)
            out[predicted_image(version=species, embedding=vector).id] = vector
    return out


def brute_force(vectors: dict[int, np.ndarray], query: np.ndarray, k: int, exclude=None) -> list[int]:
    ids = np.asarray([i for i in vectors if i != exclude])
    scores = similarity.unit(np.stack([vectors[i] for i in ids])) @ similarity.unit(query.reshape(1, -1))[0]
    return [int(ids[i]) for i in np.lexsort((ids, -scores))[:k]]


def test_the_index_answers_as_exact_search(species):
    vectors = images(species, per_centre=10)

    for image_id, vector in list(vectors.items())[::3]:
        hits = similarity.nearest(vector, k=5, exclude=image_id)
        assert [i for i, _ in hits] == brute_force(vectors, vector, 5, exclude=image_id)
    assert similarity.matrix().index.centres is not None  # it was the index that answered


def test_an_embedding_stored_after_the_build_is_found_at_once(species, settings):
    settings.SIMILARITY_RESYNC_SECONDS = 3600
    vectors = images(species, per_centre=8)
    similarity.nearest(next(iter(vectors.values())), k=3)
    rng = np.random.default_rng(9)

    late = predicted_image(version=species, embedding=cluster_embedding(5, rng=rng))  # a new centre

    assert similarity.nearest(cluster_embedding(5, rng=rng), k=1)[0][0] == late.id


def test_a_deleted_image_is_not_returned(species):
    vectors = images(species, per_centre=8)
    victim, vector = next(iter(vectors.items()))
    assert similarity.nearest(vector, k=1)[0][0] == victim

    Image.objects.filter(id=victim).delete()

    assert victim not in [i for i, _ in similarity.nearest(vector, k=10)]


def test_a_row_committed_after_a_later_one_is_found(species):
    vectors = images(species, per_centre=8)
    rng = np.random.default_rng(7)
    early = predicted_image(version=species, embedding=cluster_embedding(6, rng=rng))
    predicted_image(version=species, embedding=cluster_embedding(0, rng=rng))
    row = Embedding.objects.get(image_id=early.id)
    row.delete()  # as if its transaction had not committed yet when the later row was read
    similarity.nearest(next(iter(vectors.values())), k=3)

    Embedding.objects.create(id=row.id, image_id=early.id, backbone=settings.DEFAULT_BACKBONE, dim=row.dim,
                             vector=row.vector)

    assert similarity.nearest(cluster_embedding(6, rng=rng), k=1)[0][0] == early.id


def test_a_query_with_nothing_new_costs_one_query(species, settings, django_assert_num_queries):
    settings.SIMILARITY_RESYNC_SECONDS = 3600
    vectors = images(species, per_centre=6)
    similarity.nearest(next(iter(vectors.values())), k=3)

    with django_assert_num_queries(1):  # the watermark read; no count of the table
        similarity.nearest(next(iter(vectors.values())), k=3, name=settings.DEFAULT_BACKBONE)
