"""Metrics with scikit-learn, calibration error and temperature scaling, all JSON-able."""

import json

import numpy as np
import pytest

from classifier.ml.metrics import (
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    softmax,
)


def test_it_gives_zero_ece_for_a_perfectly_calibrated_toy():
    # Confidence 0.75 and three right out of four; confidence 1.0 and always right.
    probs = np.array([[0.75, 0.25]] * 4 + [[0.0, 1.0]] * 2)
    targets = np.array([0, 0, 0, 1, 1, 1])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0, abs=1e-12)


def test_it_gives_small_ece_for_a_large_sampled_calibrated_toy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(20_000, 5))
    probs = softmax(logits)
    targets = np.array([rng.choice(5, p=p) for p in probs])
    assert expected_calibration_error(probs, targets) < 0.02


def test_it_measures_the_ece_of_an_overconfident_toy():
    probs = np.array([[0.9, 0.1]] * 10)
    targets = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4)


def test_it_lowers_nll_by_temperature_scaling_an_overconfident_toy():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, size=(4000, 4))
    targets = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    overconfident = 3.0 * true_logits

    t = fit_temperature(overconfident, targets)

    assert t == pytest.approx(3.0, rel=0.15)
    before = negative_log_likelihood(softmax(overconfident), targets)
    after = negative_log_likelihood(softmax(overconfident, t), targets)
    assert after < before - 0.1
    assert (softmax(overconfident, t).argmax(1) == softmax(overconfident).argmax(1)).all()


def test_a_small_error_free_validation_split_does_not_make_every_answer_certain():
    # Ten validation images, all right by a margin: the likelihood alone keeps rising as T
    # falls. The prior holds T near 1, so an image the model gets wrong later is not given
    # probability ~0.
    rng = np.random.default_rng(2)
    targets = np.arange(10) % 5
    logits = rng.normal(0, 1, size=(10, 5))
    logits[np.arange(10), targets] += 4.0

    plain = fit_temperature(logits, targets, prior_sigma=0)
    t = fit_temperature(logits, targets)

    assert plain < 0.1
    assert 0.6 < t <= 1.0
    wrong = np.array([[3.0, 0.0, 0.0, 0.0, 0.0]])  # confidently "0", truly "1"
    assert softmax(wrong, t)[0, 1] > 0.01 > softmax(wrong, plain)[0, 1]


def test_it_reports_per_class_scores_and_a_confusion_matrix_as_json():
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    targets = [0, 1, 1, 2]

    metrics = classification_metrics(probs, targets, ["cat", "dog", "emu"])
    data = json.loads(json.dumps(metrics.to_dict()))

    assert data["accuracy"] == pytest.approx(0.75)
    assert data["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert data["per_class"]["dog"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert data["per_class"]["cat"]["precision"] == 0.5
    assert data["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    assert data["n"] == 4 and data["classes"] == ["cat", "dog", "emu"]


def test_it_refuses_probabilities_of_the_wrong_width():
    with pytest.raises(ValueError, match="3"):
        classification_metrics(np.ones((2, 2)) / 2, [0, 1], ["a", "b", "c"])
