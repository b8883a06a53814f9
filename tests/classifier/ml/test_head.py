"""The linear head: L-BFGS on standardised features, saved as a plain layer on raw ones."""

import numpy as np
import pytest
import torch

from classifier.ml.head import fit_head, fit_linear, linear_logits


def blobs(n: int, *, seed: int, dim: int = 64, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1, size=(classes, dim))
    y = rng.integers(0, classes, n)
    # Raw features on very different scales: the standardisation must absorb that.
    x = (centres[y] + rng.normal(0, 0.8, size=(n, dim))) * np.geomspace(0.01, 100, dim) + 5.0
    return x.astype(np.float32), y


def test_it_learns_separable_classes_on_raw_features():
    x, y = blobs(300, seed=0)
    test_x, test_y = blobs(200, seed=1)

    layer = fit_linear(x, y, 3, weight_decay=1e-3)

    assert isinstance(layer, torch.nn.Linear)
    assert (linear_logits(layer, test_x).argmax(1) == test_y).mean() > 0.95


def test_it_chooses_the_weight_decay_on_validation_and_records_the_candidates():
    x, y = blobs(300, seed=0)
    val_x, val_y = blobs(100, seed=2)

    fit = fit_head(x, y, val_x, val_y, 3, grid=(1e-3, 1e-2, 1e-1))

    assert fit.weight_decay in (1e-3, 1e-2, 1e-1)
    best = min(fit.candidates, key=lambda c: c.val_nll)
    assert fit.weight_decay == best.weight_decay
    assert all(0.0 <= c.val_accuracy <= 1.0 for c in fit.candidates)


def test_it_refuses_to_choose_without_a_validation_split():
    x, y = blobs(30, seed=0)
    with pytest.raises(ValueError, match="validation"):
        fit_head(x, y, x[:0], y[:0], 3)
