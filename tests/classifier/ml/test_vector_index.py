"""The nearest-neighbour index: above min_rows it answers as exact search does on clustered data,
finds rows added after it was built, never returns removed rows, and searches `among` exactly."""

import numpy as np

from classifier.ml.vector_index import VectorIndex, unit

DIM = 48


def clustered(n: int, rng: np.random.Generator, clusters: int = 12) -> np.ndarray:
    """Non-negative vectors around a few centres, as pooled ReLU features are."""
    centres = np.abs(rng.normal(0.0, 1.0, (clusters, DIM)))
    return np.abs(centres[rng.integers(0, clusters, n)] + rng.normal(0.0, 0.4, (n, DIM))).astype(np.float32)


def exact(vectors: np.ndarray, keys: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = unit(vectors) @ unit(query.reshape(1, -1))[0]
    return [int(keys[i]) for i in np.lexsort((keys, -scores))[:k]]


def filled(vectors: np.ndarray, *, min_rows: int) -> VectorIndex:
    index = VectorIndex(DIM, min_rows=min_rows)
    keys = np.arange(len(vectors)) + 100
    index.add(keys, keys + 1000, vectors)
    return index


def test_the_index_answers_as_exact_search_on_clustered_data():
    rng = np.random.default_rng(0)
    vectors = clustered(2000, rng)
    index = filled(vectors, min_rows=500)
    keys = np.arange(len(vectors)) + 100

    assert index.centres is not None  # searched through the lists, not exactly
    for i in range(0, 2000, 37):
        query = vectors[i] + rng.normal(0.0, 0.05, DIM).astype(np.float32)
        hits = index.search(query, 10)
        assert [key for key, _ in hits] == exact(vectors, keys, query, 10)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)


def test_below_min_rows_search_is_exact():
    rng = np.random.default_rng(1)
    vectors = clustered(300, rng)
    index = filled(vectors, min_rows=500)

    assert index.centres is None
    assert [k for k, _ in index.search(vectors[7], 5)] == exact(vectors, np.arange(300) + 100, vectors[7], 5)


def test_rows_added_after_the_build_are_found_and_laid_out_later():
    rng = np.random.default_rng(2)
    index = filled(clustered(1000, rng), min_rows=500)
    late = clustered(1, rng)[0]

    index.add([5000], [9000], late[None])

    assert index.search(late, 1)[0][0] == 5000
    index.add(np.arange(200) + 6000, np.arange(200) + 10000, clustered(200, rng))  # past the tail's share
    assert len(index.tail_keys) == 0 and len(index) == 1201
    assert index.search(late, 1)[0][0] == 5000


def test_removed_rows_are_never_returned():
    rng = np.random.default_rng(3)
    vectors = clustered(1000, rng)
    index = filled(vectors, min_rows=500)

    index.remove([1000 + 100 + 42])  # the row of key 142

    assert 142 not in [k for k, _ in index.search(vectors[42], 20)]
    assert 142 not in [k for k, _ in index.search(vectors[42], 20, among=[141, 142, 143])]
    index.remove(np.arange(1100, 1300))  # a fifth removed (142 among them): laid out again without them
    assert len(index) == 800 and not index.base_dead.any()
    assert not {k for k, _ in index.search(vectors[10], 50)} & set(range(100, 300))


def test_among_is_exact_and_excludes_the_query():
    rng = np.random.default_rng(4)
    vectors = clustered(1000, rng)
    index = filled(vectors, min_rows=500)
    among = list(range(100, 1100, 9))

    hits = index.search(vectors[0], 6, among=among, exclude=100)

    allowed = np.asarray([k for k in among if k != 100])
    assert [k for k, _ in hits] == exact(vectors[allowed - 100], allowed, vectors[0], 6)


def test_shrinking_below_min_rows_goes_back_to_exact_search():
    rng = np.random.default_rng(5)
    vectors = clustered(600, rng)
    index = filled(vectors, min_rows=500)

    index.remove(np.arange(1100, 1300))

    assert index.centres is None and len(index) == 400
    keys = np.arange(300, 700)
    assert [k for k, _ in index.search(vectors[250], 5)] == exact(vectors[200:], keys, vectors[250], 5)
