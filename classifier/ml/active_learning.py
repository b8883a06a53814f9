"""Which unlabelled images a person should label next.

Uncertainty alone picks ten near-identical hard cats; diversity alone ignores what the model
already knows. We take the most uncertain candidates (by margin between the two best
classes), cluster them on their embeddings, and take the most uncertain image of each
cluster (the "diverse mini-batch" recipe: Zhdanov, 2019). A small random share keeps the
labelled data an unbiased sample, which evaluation relies on.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

STRATEGIES = ("margin_diverse", "margin", "entropy", "random")


@dataclass(frozen=True)
class QueueParams:
    strategy: str = "margin_diverse"
    random_share: float = 0.1  # this share of each batch is drawn at random
    pool_factor: int = 10  # cluster the pool_factor * batch most uncertain candidates

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown queue strategy {self.strategy!r}; choose one of: {', '.join(STRATEGIES)}")
        if not 0.0 <= self.random_share <= 1.0:
            raise ValueError("random_share must be between 0 and 1")


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): 1 when the two best classes tie, 0 when the model is sure."""
    if probs.shape[1] < 2:
        return np.zeros(len(probs))
    top2 = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy_uncertainty(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(max(probs.shape[1], 2))


def select_batch(
    *,
    probs: np.ndarray | None,
    embeddings: np.ndarray | None,
    batch_size: int,
    params: QueueParams = QueueParams(),
    seed: int = 0,
) -> list[int]:
    """Indices (into the candidate rows) of the next batch, most useful first.

    probs is (N, C) from the current model, or None before any model exists (then only
    diversity decides). embeddings is (N, D), or None (then only uncertainty decides).
    """
    n = len(probs) if probs is not None else (len(embeddings) if embeddings is not None else 0)
    batch_size = min(batch_size, n)
    if batch_size <= 0:
        return []
    rng = np.random.default_rng(seed % 2**32)
    if params.strategy == "random" or (probs is None and embeddings is None):
        return [int(i) for i in rng.permutation(n)[:batch_size]]

    n_random = int(round(batch_size * params.random_share)) if batch_size > 1 else 0
    n_chosen = batch_size - n_random
    if probs is None:
        scores = np.zeros(n)
    elif params.strategy == "entropy":
        scores = entropy_uncertainty(probs)
    else:
        scores = margin_uncertainty(probs)

    if params.strategy in ("margin", "entropy") or embeddings is None or n_chosen <= 1:
        chosen = list(np.argsort(-scores, kind="stable")[:n_chosen])
    elif probs is None:
        # Cold start: no model to be uncertain yet, so cover the data: one representative
        # image per cluster of a sample.
        pool = rng.permutation(n)[: max(n_chosen * params.pool_factor, 2000)]
        chosen = _cluster_picks(pool, None, embeddings, n_chosen, seed)
    else:
        pool = np.argsort(-scores, kind="stable")[: n_chosen * params.pool_factor]
        chosen = _cluster_picks(pool, scores, embeddings, n_chosen, seed)

    rest = np.setdiff1d(np.arange(n), np.asarray(chosen, dtype=int))
    extra = list(rng.choice(rest, size=min(n_random, len(rest)), replace=False)) if n_random else []
    # The random picks are spread through the batch rather than left at its end, so an
    # annotator who stops early has still labelled some of them.
    ordered = chosen[:]
    for j, idx in enumerate(extra):
        ordered.insert(min(len(ordered), (j + 1) * max(1, len(chosen) // (len(extra) + 1))), idx)
    return [int(i) for i in ordered]


def _cluster_picks(pool, scores, embeddings, k, seed) -> list[int]:
    """One image per k-means cluster of the pool: the most uncertain, or without scores the
    one nearest its centre."""
    if len(pool) <= k:
        return list(pool) if scores is None else sorted(pool, key=lambda i: -scores[i])
    x = embeddings[pool].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    km = KMeans(n_clusters=k, n_init=3, random_state=seed % 2**32).fit(x)
    picks = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if not len(members):
            continue
        if scores is None:
            best = members[np.argmin(((x[members] - km.cluster_centers_[c]) ** 2).sum(axis=1))]
        else:
            best = members[np.argmax(scores[pool[members]])]
        picks.append(pool[best])
    if scores is not None:
        picks.sort(key=lambda i: -scores[i])
    return picks
