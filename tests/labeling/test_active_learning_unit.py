"""classifier.ml.active_learning.select_batch on arrays: no database, no Django."""

import numpy as np
import pytest

from classifier.ml.active_learning import STRATEGIES, QueueParams, select_batch

EXACT = QueueParams(strategy="margin_diverse", random_share=0.0)


def three_clusters(per_cluster: int = 10, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings in three tight, far-apart clusters, and each row's cluster."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(3), per_cluster)
    x = rng.normal(0.0, 0.01, (len(cluster), dim))
    x[np.arange(len(cluster)), cluster] += 1.0
    return x.astype(np.float32), cluster


def probs_with_margins(margins) -> np.ndarray:
    """Three-class rows whose two best classes differ by each margin."""
    rows = []
    for m in margins:
        p2 = (0.9 - m) / 2
        rows.append([p2 + m, p2, 0.1])
    return np.array(rows)


def test_it_ranks_a_tie_between_the_two_best_classes_first():
    probs = np.array([
        [0.90, 0.05, 0.05],  # sure
        [0.45, 0.45, 0.10],  # a tie: margin 0
        [0.60, 0.30, 0.10],
        [0.34, 0.33, 0.33],  # nearly a three-way tie, but margin 0.01
    ])
    picks = select_batch(probs=probs, embeddings=None, batch_size=4,
                         params=QueueParams(strategy="margin", random_share=0.0))
    assert picks == [1, 3, 2, 0]


def test_it_picks_from_several_clusters_when_the_most_uncertain_share_one():
    embeddings, cluster = three_clusters()
    # The six most uncertain rows all sit in cluster 0; clusters 1 and 2 are ever more certain.
    margins = np.concatenate([np.linspace(0.0, 0.05, 6), np.linspace(0.3, 0.4, 4), np.linspace(0.5, 0.6, 10),
                              np.linspace(0.7, 0.8, 10)])
    probs = probs_with_margins(margins)
    assert set(cluster[np.argsort(margins)[:6]]) == {0}

    picks = select_batch(probs=probs, embeddings=embeddings, batch_size=3, params=EXACT)

    assert len(set(picks)) == 3
    assert len(set(cluster[picks])) >= 2
    assert picks[0] == 0  # the most uncertain image of all still leads the batch


def test_it_picks_from_one_cluster_by_margin_alone():
    # The contrast to the test above: without diversity the batch is three near-duplicates.
    embeddings, cluster = three_clusters()
    margins = np.concatenate([np.linspace(0.0, 0.05, 6), np.linspace(0.3, 0.8, 24)])
    picks = select_batch(probs=probs_with_margins(margins), embeddings=embeddings, batch_size=3,
                         params=QueueParams(strategy="margin", random_share=0.0))
    assert picks == [0, 1, 2]
    assert set(cluster[picks]) == {0}


def test_it_covers_the_clusters_on_a_cold_start():
    embeddings, cluster = three_clusters(per_cluster=8)
    picks = select_batch(probs=None, embeddings=embeddings, batch_size=3, params=EXACT, seed=3)
    assert len(set(picks)) == 3
    assert all(0 <= i < len(embeddings) for i in picks)
    assert set(cluster[picks]) == {0, 1, 2}


def test_it_draws_the_whole_batch_at_random_with_a_random_share_of_one():
    probs = probs_with_margins(np.linspace(0.0, 0.9, 20))
    embeddings, _ = three_clusters(per_cluster=7)
    picks = select_batch(probs=probs, embeddings=embeddings[:20], batch_size=6,
                         params=QueueParams(strategy="margin_diverse", random_share=1.0), seed=11)
    assert len(picks) == 6
    assert len(set(picks)) == 6
    assert set(picks) <= set(range(20))
    assert all(isinstance(i, int) for i in picks)


def test_it_draws_a_random_share_different_from_the_most_uncertain():
    # A share of 1.0 is random, not uncertainty: over a few seeds it is not always the top 6.
    probs = probs_with_margins(np.linspace(0.0, 0.9, 40))
    batches = {
        tuple(sorted(select_batch(probs=probs, embeddings=None, batch_size=6,
                                  params=QueueParams(strategy="margin", random_share=1.0), seed=seed)))
        for seed in range(5)
    }
    assert batches != {(0, 1, 2, 3, 4, 5)}


def test_it_refuses_an_unknown_strategy_naming_the_valid_ones():
    with pytest.raises(ValueError) as e:
        QueueParams(strategy="least_confident")
    message = str(e.value)
    assert "least_confident" in message
    for name in STRATEGIES:
        assert name in message


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_it_returns_every_candidate_when_the_batch_is_larger(strategy):
    probs = probs_with_margins([0.1, 0.5, 0.2, 0.8])
    embeddings, _ = three_clusters(per_cluster=2)
    picks = select_batch(probs=probs, embeddings=embeddings[:4], batch_size=10,
                         params=QueueParams(strategy=strategy, random_share=0.1))
    assert sorted(picks) == [0, 1, 2, 3]



def test_it_accepts_a_seed_beyond_32_bits():
    embeddings, cluster = three_clusters()
    probs = probs_with_margins(np.linspace(0.0, 0.9, 30))
    picks = select_batch(probs=probs, embeddings=embeddings, batch_size=3, params=EXACT, seed=2**32 + 5)
    assert len(set(picks)) == 3
