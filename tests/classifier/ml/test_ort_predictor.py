"""OrtPredictor serves an exported version with the same results as the PyTorch Predictor."""

import numpy as np
import pytest
from PIL import Image

from classifier.ml.backbones import get_spec
from classifier.ml.export import export_onnx
from classifier.ml.images import decode_image
from classifier.ml.ort import BACKEND, FastPreprocess, OnnxModelError, OrtPredictor, ort_available
from classifier.ml.predict import ModelCard, Predictor
from classifier.ml.preprocessing import Preprocessing
from classifier.ml.zero_shot import default_mapping
from tests.classifier.ml.conftest import CLASSES as TINY_CLASSES
from tests.classifier.ml.conftest import tiny_image
from tests.helpers import demo_photo

CLASSES = ["dalmatian", "flamingo", "starfish", "llama"]
PHOTOS = ["dalmatian", "flamingo", "starfish", "llama", "emu"]


@pytest.fixture(scope="module")
def photos():
    return [decode_image(demo_photo(label).read_bytes()).image for label in PHOTOS]


@pytest.fixture(scope="module")
def zero_shot(photos, tmp_path_factory):
    """(torch Predictor, OrtPredictor) for a zero-shot card."""
    predictor = Predictor(ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(CLASSES)))
    path = tmp_path_factory.mktemp("zero-shot") / "model.onnx"
    export_onnx(predictor, path, check_images=photos[:2])
    return predictor, OrtPredictor(predictor.card, path, threads=1)


@pytest.fixture(scope="module")
def trained(head_model, photos, tmp_path_factory):
    """(torch Predictor, OrtPredictor) for the head trained on the tiny tree (flip-averaged)."""
    predictor = Predictor.from_dir(head_model.model_dir)
    path = tmp_path_factory.mktemp("head") / "model.onnx"
    export_onnx(predictor, path, check_images=photos[:2])
    return predictor, OrtPredictor(predictor.card, path, threads=1, model_dir=head_model.model_dir)


def assert_same_results(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        assert [s.label for s in a.top] == [s.label for s in b.top]
        assert np.abs(np.subtract(a.probabilities, b.probabilities)).max() < 1e-4
        assert np.abs(a.embedding - b.embedding).max() < 1e-3
        assert b.embedding.dtype == np.float32


def test_ort_is_available_here():
    assert ort_available()


@pytest.mark.parametrize("preprocessing", [
    get_spec("efficientnet_lite0").preprocessing,  # bicubic, (x - 127) / 128
    get_spec("resnet50").preprocessing,  # bilinear, ImageNet mean and std
    Preprocessing(resize_size=72, crop_size=64),
], ids=["lite0", "resnet50", "small"])
def test_it_preprocesses_exactly_like_the_cards_transform(preprocessing, photos):
    odd = [
        photos[0].convert("L"),  # greyscale
        photos[1].convert("RGBA"),
        photos[2].rotate(90, expand=True),  # portrait
        tiny_image(TINY_CLASSES[0], 0),  # smaller than the crop: upscaled
        Image.new("RGB", (500, 40), (255, 0, 10)),  # a thin strip
    ]
    images = photos + odd

    got = FastPreprocess(preprocessing).batch(images)

    expected = preprocessing.batch(images).numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_it_predicts_a_zero_shot_card_like_the_torch_predictor(zero_shot, photos):
    predictor, served = zero_shot

    assert_same_results(predictor.predict(photos, top_k=3), served.predict(photos, top_k=3))
    assert_same_results(predictor.predict(photos[:1], top_k=50), served.predict(photos[:1], top_k=50))
    assert served.backend == BACKEND == "onnxruntime-cpu"
    assert served.card is predictor.card
    assert served.predict([]) == []


def test_it_predicts_a_trained_head_like_the_torch_predictor(trained, tiny_tree, photos):
    predictor, served = trained
    images = [tiny_image(label, 1) for label in TINY_CLASSES] + photos[:2]

    expected = predictor.predict(images, top_k=2)

    assert_same_results(expected, served.predict(images, top_k=2))
    assert [r.label for r in served.predict(images[:3], top_k=1)] == list(TINY_CLASSES)


def test_it_rescores_embeddings_like_the_torch_predictor(zero_shot, trained, photos):
    for predictor, served in (zero_shot, trained):
        embeddings = np.stack([r.embedding for r in served.predict(photos)])

        assert_same_results(predictor.predict_embeddings(embeddings, top_k=3),
                            served.predict_embeddings(embeddings, top_k=3))


def test_it_predicts_a_batch_preprocessed_elsewhere(zero_shot, photos):
    _, served = zero_shot
    batch = FastPreprocess(served.card.preprocessing).batch(photos)

    assert_same_results(served.predict(photos), served.predict_preprocessed(batch))
    with pytest.raises(ValueError, match=r"float32 \(n, 3, 224, 224\)"):
        served.predict_preprocessed(batch[:, :, :100])


def test_it_refuses_a_graph_exported_for_another_card(zero_shot):
    _, served = zero_shot
    other = ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(["emu", "llama"]))

    with pytest.raises(OnnxModelError, match="exported for another card"):
        OrtPredictor(other, served.onnx_path, threads=1)
    with pytest.raises(FileNotFoundError, match="export the version first"):
        OrtPredictor(other, served.onnx_path.with_name("missing.onnx"))


def test_a_flip_averaged_head_also_gives_each_images_plain_features(zero_shot, trained, photos):
    # What the Embedding table stores for every version: the image alone, without its mirror,
    # so similarity and near-duplicates compare like with like after a head is promoted.
    plain = np.stack([r.embedding for r in zero_shot[0].predict(photos)])
    for backend in trained:
        assert backend.card.tta
        results = backend.predict(photos)
        got = np.stack([r.plain_embedding for r in results])
        assert np.abs(got - plain).max() < 1e-3
        assert np.abs(np.stack([r.embedding for r in results]) - plain).max() > 1e-2  # the head's are averaged
    assert all(r.plain_embedding is None for r in trained[0].predict_embeddings(plain[:2]))
