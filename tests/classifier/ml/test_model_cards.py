"""Cards of trained kinds: what they hold, and what they refuse."""

import pytest

from classifier.ml.backbones import get_spec
from classifier.ml.cards import ZERO_SHOT_TOP_K
from classifier.ml.predict import KINDS, ModelCard, ModelDirError, Predictor
from classifier.ml.zero_shot import default_mapping


def head_card(**changes) -> ModelCard:
    fields = {"kind": "head", "backbone": "efficientnet_lite0", "classes": ("cat", "dog"),
                  "preprocessing": get_spec("efficientnet_lite0").preprocessing, "temperature": 0.7, "tta": True,
                  "files": {"head.pt": "ab" * 32}, "metrics": {"test": {"accuracy": 0.9}}, "training": {"seed": 3}}
    return ModelCard(**(fields | changes))


def test_it_lists_the_trained_kinds():
    assert KINDS == ("zero_shot", "head", "finetune")


def test_it_keeps_the_keys_of_a_zero_shot_card():
    # A zero-shot version is named by the hash of this dict: new fields must not leak into it.
    card = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(["llama"]), top_k=None)
    assert sorted(card.to_dict()) == ["backbone", "classes", "imagenet_map", "kind", "preprocessing"]


def test_a_new_zero_shot_card_pins_its_top_k():
    card = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(["llama"]))

    assert card.zero_shot_top_k == ZERO_SHOT_TOP_K == 5
    assert card.to_dict()["zero_shot_top_k"] == 5
    assert ModelCard.from_dict(card.to_dict()) == card


def test_a_card_made_before_top_k_keeps_the_sum_over_all_imagenet_classes():
    old = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(["llama"]), top_k=None)
    stored = old.to_dict()  # what a version made before top-k holds

    card = ModelCard.from_dict(stored)

    assert card.zero_shot_top_k is None
    assert card.to_dict() == stored  # same dict, so the same hash: the same version
    assert Predictor(card).head.zero_shot.top_k is None
    assert Predictor(ModelCard.from_dict(stored | {"zero_shot_top_k": 5})).head.zero_shot.top_k == 5


def test_it_round_trips_the_top_k_of_a_combined_card():
    card = head_card(classes=("cat", "dog", "other"), head_classes=("cat", "dog"),
                     imagenet_map={"cat": [281]}, zero_shot_top_k=5)
    assert card.to_dict()["zero_shot_top_k"] == 5
    assert ModelCard.from_dict(card.to_dict()) == card
    assert "zero_shot_top_k" not in head_card(classes=("cat", "dog", "other"), head_classes=("cat", "dog")).to_dict()


def test_it_refuses_a_top_k_outside_the_imagenet_classes():
    with pytest.raises(ValueError, match="zero_shot_top_k"):
        head_card(zero_shot_top_k=0)


def test_it_round_trips_a_head_card():
    card = head_card()
    assert ModelCard.from_dict(card.to_dict()) == card


def test_it_refuses_a_trained_card_that_lists_no_weights():
    with pytest.raises(ValueError, match="model.pt"):
        head_card(kind="finetune")


def test_it_refuses_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        head_card(temperature=0.0)


def test_it_needs_the_model_dir_to_serve_a_trained_card():
    with pytest.raises(ModelDirError, match="head.pt"):
        Predictor(head_card())
