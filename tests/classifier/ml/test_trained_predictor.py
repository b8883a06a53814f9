"""A trained head served by the Predictor, and training from an explicit list of items."""

import numpy as np
import pytest

from classifier.ml.datasets import TEST, TRAIN, VAL, Item, image_folder
from classifier.ml.images import decode_image
from classifier.ml.predict import Predictor
from classifier.ml.train import TrainConfig, fit
from tests.classifier.ml.conftest import CLASSES


@pytest.fixture(scope="module")
def predictor(head_model):
    return Predictor.from_dir(head_model.model_dir)


@pytest.fixture(scope="module")
def images(tiny_tree):
    return [(item.label, decode_image(item.path.read_bytes()).image) for item in image_folder(tiny_tree)[::3]]


def test_it_predicts_the_class_of_each_image(predictor, images):
    results = predictor.predict([im for _, im in images], top_k=1)
    assert [r.label for r in results] == [label for label, _ in images]
    assert predictor.backend == "torch-cpu"


def test_it_rescores_embeddings_exactly_as_it_predicts_images(predictor, images):
    full = predictor.predict([im for _, im in images], top_k=3)
    rescored = predictor.predict_embeddings(np.stack([r.embedding for r in full]), top_k=3)

    for a, b in zip(full, rescored):
        assert [s.label for s in a.top] == [s.label for s in b.top]
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-6)
        assert sum(a.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert np.array_equal(a.embedding, b.embedding)


def test_it_applies_the_cards_temperature(predictor, images, head_model):
    # Among the learned classes the served distribution is softmax(logits / T) (issue 11 adds
    # "other" beside them; these classes have no ImageNet mapping, so their zero-shot prior is alike).
    (result,) = predictor.predict([images[0][1]], top_k=1)
    logits = predictor.head.linear(__import__("torch").from_numpy(result.embedding[None])).detach().numpy()[0]
    t = head_model.card.temperature
    learned = np.log(np.array(result.probabilities[:len(logits)]))
    assert np.allclose(learned - learned[0], (logits - logits[0]) / t, atol=1e-4)


def test_it_refuses_embeddings_of_the_wrong_width(predictor):
    with pytest.raises(ValueError, match="1280"):
        predictor.predict_embeddings(np.zeros((2, 960), np.float32))


def test_it_trains_on_explicit_items_keeping_their_splits(tiny_tree, embedding_cache, tmp_path):
    # As the Django app calls it: a frozen list of (path, label, split), no folder walk.
    found = image_folder(tiny_tree)
    splits = [TRAIN, TRAIN, VAL, TEST]
    items = [Item(item.path, item.label, splits[i % 4]) for i, item in enumerate(found)]
    progress = []

    result = fit(TrainConfig(out=tmp_path / "v7", items=items, cache_dir=embedding_cache, min_per_class=4),
                 progress=progress.append)

    assert result.card.classes == CLASSES + ("other",)  # every version serves "other" (issue 11)
    assert (result.summary["n_train"], result.summary["n_val"], result.summary["n_test"]) == (12, 6, 6)
    assert {event.stage for event in progress} >= {"embed", "fit", "write"}
    assert (tmp_path / "v7" / "head.pt").is_file()


def test_it_writes_nothing_when_the_progress_callback_cancels(tiny_tree, embedding_cache, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel_when_fitting(event):
        if event.stage == "fit":
            raise Cancelled

    with pytest.raises(Cancelled):
        fit(TrainConfig(out=tmp_path / "v8", data_dir=tiny_tree, cache_dir=embedding_cache, min_per_class=4,
                        test_fraction=0.25, val_fraction=0.3), progress=cancel_when_fitting)

    assert list(tmp_path.iterdir()) == []
