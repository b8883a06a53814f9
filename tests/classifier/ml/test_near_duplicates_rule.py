"""The near-duplicate rule that the app and benchmarks/near_duplicates.py share."""

import numpy as np

from classifier.ml import near_duplicates


def test_the_best_earlier_image_reaching_the_threshold_is_the_match():
    hits = [(9, 0.99), (4, 0.97), (2, 0.90), (1, 0.80)]  # best first; 9 is later than the image

    assert near_duplicates.earlier_match(hits, image_id=5, threshold=0.85) == 4
    assert near_duplicates.earlier_match(hits, image_id=5, threshold=0.85, dismissed={4}) == 2
    assert near_duplicates.earlier_match(hits, image_id=5, threshold=0.85, dismissed={4, 2}) is None
    assert near_duplicates.earlier_match(hits, image_id=5, threshold=0.97) == 4  # reaching counts


def test_pairs_are_every_pair_whose_cosine_reaches_the_threshold():
    vectors = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [0.0, 3.0]])

    found = near_duplicates.pairs(vectors, 0.99)

    assert [(a, b) for a, b, _ in found] == [(0, 1), (2, 3)]  # length plays no part
    assert abs(found[1][2] - 1.0) < 1e-6
