"""Model cards and the Predictor, on real photos with EfficientNet-Lite0 (loaded once here)."""

import json

import numpy as np
import pytest

from classifier.ml.backbones import UnknownBackbone, available_backbones, get_spec
from classifier.ml.images import decode_image
from classifier.ml.predict import KINDS, ModelCard, Predictor
from classifier.ml.zero_shot import OTHER, default_mapping
from tests.helpers import demo_photo

CLASSES = ["dalmatian", "flamingo", "starfish", "llama"]
PHOTOS = ["dalmatian", "flamingo", "starfish"]


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(CLASSES))


@pytest.fixture(scope="module")
def predictor(card) -> Predictor:
    return Predictor(card)


@pytest.fixture(scope="module")
def photos():
    return [decode_image(demo_photo(label).read_bytes()).image for label in PHOTOS]


@pytest.fixture(scope="module")
def results(predictor, photos):
    return predictor.predict(photos, top_k=50)


@pytest.fixture(scope="module")
def dalmatian_top2(predictor, photos):
    (result,) = predictor.predict(photos[:1], top_k=2)
    return result


def test_it_orders_a_zero_shot_card_with_other_last(card):
    assert card.classes == ("dalmatian", "flamingo", "llama", "starfish", OTHER)
    assert card.preprocessing == get_spec("efficientnet_lite0").preprocessing
    assert card.imagenet_map["flamingo"] == [130]


def test_it_round_trips_a_card_through_json(card):
    data = json.loads(json.dumps(card.to_dict()))
    assert data["classes"][-1] == OTHER
    assert ModelCard.from_dict(data) == card


def test_it_refuses_an_unknown_kind_naming_the_valid_ones(card):
    data = card.to_dict() | {"kind": "magic"}
    with pytest.raises(ValueError) as excinfo:
        ModelCard.from_dict(data)
    assert "magic" in str(excinfo.value)
    for kind in KINDS:
        assert kind in str(excinfo.value)


def test_it_refuses_an_unknown_backbone_naming_the_valid_ones(card):
    data = card.to_dict() | {"backbone": "alexnet_xl"}
    with pytest.raises(UnknownBackbone) as excinfo:
        ModelCard.from_dict(data)
    for name in available_backbones():
        assert name in str(excinfo.value)


def test_it_predicts_each_photo_as_its_folder(results):
    assert [r.label for r in results] == PHOTOS


def test_it_sorts_the_top_classes_best_first(results):
    for result in results:
        ps = [s.p for s in result.top]
        assert ps == sorted(ps, reverse=True)
        assert result.confidence == ps[0]


def test_it_gives_probabilities_that_sum_to_one(results, card):
    for result in results:
        assert len(result.probabilities) == len(card.classes)
        assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in result.probabilities)


def test_it_matches_the_top_scores_to_the_probabilities(results, card):
    for result in results:
        for scored in result.top:
            assert result.probabilities[card.classes.index(scored.label)] == pytest.approx(scored.p)


def test_it_returns_top_k_classes(dalmatian_top2):
    assert [s.label for s in dalmatian_top2.top][0] == "dalmatian"
    assert len(dalmatian_top2.top) == 2


def test_it_returns_every_class_at_most_for_a_large_top_k(results, card):
    for result in results:
        assert sorted(s.label for s in result.top) == sorted(card.classes)


def test_it_returns_a_float32_embedding(results):
    for result in results:
        assert result.embedding.dtype == np.float32
        assert result.embedding.shape == (1280,)
        assert np.isfinite(result.embedding).all()


def test_it_predicts_one_image_as_it_does_in_a_batch(dalmatian_top2, results):
    assert dalmatian_top2.label == results[0].label
    assert np.allclose(dalmatian_top2.probabilities, results[0].probabilities, atol=1e-4)
    assert np.allclose(dalmatian_top2.embedding, results[0].embedding, atol=1e-3)


def test_it_returns_nothing_for_no_images(predictor):
    assert predictor.predict([]) == []
