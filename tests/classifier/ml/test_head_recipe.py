"""The head recipe for small data (issue 15) on tiny generated features: cross-validation picks
the regularisation and the zero-shot prior's weight, every class is served, probabilities sum
to one, and a seed fixes the fit."""

import numpy as np
import pytest
import torch

from classifier.ml.combine import CombinedHead, fit_calibration
from classifier.ml.config import WEIGHT_DECAY_GRID as GRID
from classifier.ml.head import PRIOR_WEIGHTS, fit_recipe, stratified_folds

CLASSES = ("cat", "dog", "okapi")


def features(n_per_class: int, *, signal: float, seed: int = 0, dim: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASSES)), n_per_class)
    centres = rng.normal(size=(len(CLASSES), dim))
    return (signal * centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


def log_prior(y: np.ndarray, *, informative: bool, seed: int = 0) -> np.ndarray:
    """A log zero-shot prior per class: right most of the time, or pure noise."""
    rng = np.random.default_rng(seed + 1)
    scores = rng.normal(size=(len(y), len(CLASSES)))
    if informative:
        scores[np.arange(len(y)), y] += 3.0
    return np.log(torch.softmax(torch.from_numpy(scores), dim=1).numpy())


def test_cross_validation_regularises_noise_hard_and_a_clear_signal_lightly():
    noise_x, noise_y = features(12, signal=0.0)
    clear_x, clear_y = features(40, signal=1.5)
    on_noise = fit_recipe(noise_x, noise_y, len(CLASSES), grid=GRID)
    on_signal = fit_recipe(clear_x, clear_y, len(CLASSES), grid=GRID)
    assert on_noise.weight_decay == max(GRID)
    assert on_signal.weight_decay < on_noise.weight_decay
    assert len(on_signal.candidates) >= 2 and all("cv_nll" in c for c in on_signal.candidates)


def test_the_zero_shot_prior_is_used_when_it_helps_and_not_when_it_does_not():
    x, y = features(3, signal=0.2)  # three labels per class, barely separable: ImageNet knows better
    helped = fit_recipe(x, y, len(CLASSES), prior=log_prior(y, informative=True), grid=GRID)
    ignored = fit_recipe(x, y, len(CLASSES), prior=log_prior(y, informative=False), grid=GRID)
    assert helped.prior_weight > 0 and helped.prior_weight in PRIOR_WEIGHTS
    assert ignored.prior_weight == 0


def test_every_class_is_served_and_probabilities_sum_to_one():
    x, y = features(6, signal=1.0)
    fit = fit_recipe(x, y, len(CLASSES), grid=GRID)
    head = CombinedHead(fit.layer, classes=CLASSES + ("other",), head_classes=CLASSES,
                        imagenet_map={"cat": [281], "dog": [151]}, prior_weight=0.25)
    g = torch.randn(len(y), 1000) * 4
    head.temperature, head.other_bias = fit_calibration(head, fit.cv_logits, g[fit.cv_index].numpy(),
                                                        y[fit.cv_index])
    probabilities = head(torch.from_numpy(x), g)
    assert probabilities.shape == (len(y), len(CLASSES) + 1)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(y)), atol=1e-5)
    assert (probabilities.argmax(dim=1).numpy() == y).mean() > 0.9


def test_a_seed_fixes_the_fit():
    x, y = features(5, signal=0.8)
    prior = log_prior(y, informative=True)
    first, again = (fit_recipe(x, y, len(CLASSES), prior=prior, grid=GRID, seed=3) for _ in range(2))
    assert first.weight_decay == again.weight_decay and first.prior_weight == again.prior_weight
    assert torch.equal(first.layer.weight, again.layer.weight)


def test_folds_are_stratified():
    y = np.repeat(np.arange(3), [10, 5, 2])
    folds = stratified_folds(y, 5, seed=0)
    for label in range(3):
        counts = np.bincount(folds[y == label], minlength=5)
        assert counts.max() - counts.min() <= 1


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_top_k_changes_the_served_zero_shot_scores_but_not_the_prior():
    # The prior's weight was measured on the sum over all 1000 ImageNet classes; a top-k q is 0
    # outside the image's top k, and log 0 would turn the prior into a veto.
    x, y = features(6, signal=1.0)
    fit = fit_recipe(x, y, len(CLASSES), grid=GRID)
    heads = [CombinedHead(fit.layer, classes=("cat", "dog", "okapi", "ox", "other"), head_classes=CLASSES,
                          imagenet_map={"cat": [281], "dog": list(range(151, 269)), "ox": [345]},
                          prior_weight=0.25, zero_shot_top_k=k) for k in (None, 5)]
    g = torch.zeros(len(y), 1000)
    g[:, 151:269] = 3.0  # the dog breeds' long tail
    g[:, 345] = 6.5  # one confident ox
    g[:, 281] = torch.linspace(-2, 2, len(y))  # cat, outside every image's top five

    every, top_five = (head(torch.from_numpy(x), g) for head in heads)

    assert torch.allclose(heads[0].prior_q(g), heads[1].prior_q(g))
    assert torch.allclose(heads[0].prior(heads[0].prior_q(g)), heads[1].prior(heads[1].prior_q(g)))
    assert (top_five[:, 3] > every[:, 3]).all()  # the ox, served by zero-shot, no longer loses to the breeds
    assert torch.allclose(top_five.sum(dim=1), torch.ones(len(y)), atol=1e-5)
