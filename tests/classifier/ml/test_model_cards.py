"""Cards of trained kinds: what they hold, and what they refuse."""

import pytest

from classifier.ml.backbones import get_spec
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
    card = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(["llama"]))
    assert sorted(card.to_dict()) == ["backbone", "classes", "imagenet_map", "kind", "preprocessing"]


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
