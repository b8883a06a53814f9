"""A head trained on some of the project's classes still serves all of them (issue 11): the
learned ones by the head, the others with an ImageNet mapping by their zero-shot scores, and
"other"; the card says how each class is served, and every serving path agrees."""

import numpy as np
import pytest
import torch

from classifier.ml import train
from classifier.ml.cards import ZERO_SHOT_TOP_K
from classifier.ml.class_map import default_mapping
from classifier.ml.combine import CombinedHead
from classifier.ml.coverage import coverage_loss, plan_classes, served_classes
from classifier.ml.export import export_onnx
from classifier.ml.images import decode_image
from classifier.ml.ort import OrtPredictor
from classifier.ml.predict import ModelCard, Predictor
from tests.classifier.ml.conftest import CLASSES, SPLIT_KWARGS
from tests.helpers import demo_photo

# The project: the three generated classes (no ImageNet class), two real animals nobody has
# labelled yet (mapped), and one with neither labels nor a mapping.
PROJECT = {**dict.fromkeys(CLASSES, []), **default_mapping(["starfish", "flamingo"]), "okapi": []}


@pytest.fixture(scope="module")
def subset_model(tiny_tree, embedding_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("coverage") / "head"
    return train.fit(train.TrainConfig(out=out, data_dir=tiny_tree, cache_dir=embedding_cache, class_map=PROJECT,
                                       tta=False, **SPLIT_KWARGS))


@pytest.fixture(scope="module")
def photos():
    return [decode_image(demo_photo(name).read_bytes()).image for name in ("starfish", "flamingo", "okapi")]


def test_the_card_says_how_each_class_is_served(subset_model):
    card = subset_model.card
    assert card.head_classes == CLASSES
    assert card.classes == tuple(sorted(CLASSES + ("flamingo", "starfish"))) + ("other",)
    how = {c: s["how"] for c, s in card.served.items()}
    assert how == {**dict.fromkeys(CLASSES, "learned"), "flamingo": "zero_shot", "starfish": "zero_shot",
                   "okapi": "not_served", "other": "zero_shot"}
    assert card.served["okapi"]["needs"] == SPLIT_KWARGS["min_per_class"]
    assert served_classes(card) == set(card.classes)


def test_the_card_pins_the_top_k_its_zero_shot_part_counts(subset_model):
    card = subset_model.card
    assert card.zero_shot_top_k == ZERO_SHOT_TOP_K
    assert Predictor.from_dir(subset_model.model_dir).head.zero_shot.zero_shot.top_k == ZERO_SHOT_TOP_K


def test_the_unlearned_classes_keep_their_zero_shot_scores_and_probabilities_sum_to_one(subset_model, photos):
    predictor = Predictor.from_dir(subset_model.model_dir)
    results = predictor.predict(photos, top_k=len(predictor.card.classes))

    for result in results:
        assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-5)
    starfish, flamingo, okapi = results
    assert starfish.label == "starfish" and flamingo.label == "flamingo"
    # Zero-shot scores: the same as the zero-shot version's, up to the share the head takes.
    zero_shot = Predictor(ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=PROJECT,
                                              temperature=predictor.card.zero_shot_temperature))
    reference = zero_shot.predict(photos[:1])[0]
    assert dict(zip(predictor.card.classes, starfish.probabilities))["starfish"] == pytest.approx(
        dict(zip(zero_shot.card.classes, reference.probabilities))["starfish"], abs=1e-5)
    assert "okapi" not in predictor.card.classes  # not served yet: neither labels nor a mapping
    assert okapi.label in predictor.card.classes


def test_stored_features_score_as_the_images_do(subset_model, photos):
    predictor = Predictor.from_dir(subset_model.model_dir)
    direct = predictor.predict(photos)
    rescored = predictor.predict_embeddings(np.stack([r.embedding for r in direct]))
    for a, b in zip(direct, rescored):
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_the_onnx_export_serves_the_combined_distribution(subset_model, photos, tmp_path):
    predictor = Predictor.from_dir(subset_model.model_dir)
    report = export_onnx(predictor, tmp_path / "model.onnx", check_images=photos)
    assert report.max_abs_diff_probabilities < 1e-4
    served = OrtPredictor(predictor.card, tmp_path / "model.onnx", threads=1).predict(photos)
    for a, b in zip(predictor.predict(photos), served):
        assert a.label == b.label and np.allclose(a.probabilities, b.probabilities, atol=1e-4)


def test_a_learned_other_and_a_learned_unmapped_class_share_the_heads_side():
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 3)
    head = CombinedHead(linear, classes=("cat", "okapi", "starfish", "other"), head_classes=("cat", "okapi", "other"),
                        imagenet_map={"cat": [281], "starfish": [327]}, other_bias=-1.0)
    probabilities = head(torch.randn(5, 8), torch.randn(5, 1000) * 3)
    assert probabilities.shape == (5, 4)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(5), atol=1e-6)
    assert bool((probabilities > 0).all())


def test_a_plan_learns_what_has_enough_labels_and_serves_the_rest():
    labels = [("cat", "train")] * 5 + [("dog", "train")] * 4 + [("dog", "test")] + [("emu", "test")] * 6
    plan = plan_classes(labels, class_map={"cat": [281], "dog": [151], "emu": [], "yak": []}, min_per_class=5)
    assert plan.learned == ("cat", "dog")
    assert plan.served["emu"] == {"how": "not_served", "labels": 6, "needs": 1}  # none in the training split
    assert plan.served["yak"]["needs"] == 5 and plan.classes == ("cat", "dog", "other")


def test_coverage_loss_names_what_a_challenger_stops_serving():
    champion = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map={"cat": [281], "dog": [151], "emu": []})
    challenger = {"kind": "head", "classes": ["cat", "other"], "served": {"cat": {"how": "learned"}}}
    assert coverage_loss(champion, challenger) == ["dog"]  # emu was never served: no loss
