"""The near-duplicate rule: two images are near-duplicates when the cosine of their stored pooled
embeddings reaches a threshold (settings.NEAR_DUPLICATE_COSINE in the app).

One place for the rule, so the app's check at upload (labeling.summaries) and the benchmark that
chose the threshold (benchmarks/near_duplicates.py) cannot drift apart.
"""

from typing import Iterable

import numpy as np

from .vector_index import unit


def reaches(cosine, threshold: float):
    """Whether a cosine (or an array of them) makes a near-duplicate."""
    return np.asarray(cosine) >= threshold


def earlier_match(hits: Iterable[tuple[int, float]], *, image_id: int, threshold: float,
                  dismissed: Iterable[int] = ()) -> int | None:
    """The image that `image_id` is a near-duplicate of: among `hits` ((image id, cosine), best
    first), the best earlier image whose cosine reaches the threshold, leaving out the images a
    reviewer said it is not a duplicate of. None: no match."""
    dismissed = set(dismissed)
    return next((other for other, score in hits
                 if other < image_id and other not in dismissed and reaches(score, threshold)), None)


def pairs(vectors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair (i, j, cosine), i < j, of rows that the rule calls near-duplicates."""
    scores = unit(vectors) @ unit(vectors).T
    i, j = np.nonzero(np.triu(reaches(scores, threshold), k=1))
    return [(int(a), int(b), float(scores[a, b])) for a, b in zip(i, j)]
