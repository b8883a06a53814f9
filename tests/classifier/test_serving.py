"""Which backend serves a version, and its ONNX export: made once per card, checked, shared."""

import logging

import numpy as np
import pytest

from classifier import predictions, serving, uploads
from classifier.ml.ort import OrtPredictor
from classifier.ml.predict import Predictor
from tests.helpers import demo_photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_onnx_dir(settings, tmp_path):
    settings.ONNX_DIR = tmp_path / "onnx"
    return settings.ONNX_DIR


def test_a_cpu_process_serves_through_onnx_runtime_exported_once_per_card(species, fresh_onnx_dir):
    served = serving.build_predictor(species, device="cpu")

    assert isinstance(served, OrtPredictor) and served.backend == "onnxruntime-cpu"
    path = serving.onnx_path_of(species)
    assert served.onnx_path == path and path.parent == fresh_onnx_dir and path.is_file()
    assert not list(fresh_onnx_dir.glob(".*.partial"))
    exported_at = path.stat().st_mtime_ns

    again = serving.build_predictor(species, device="cpu")

    assert again.onnx_path == path and path.stat().st_mtime_ns == exported_at  # reused, not exported again


def test_it_predicts_what_pytorch_predicts(species, fresh_onnx_dir):
    from classifier.ml.images import decode_image

    photos = [decode_image(demo_photo(name, 1).read_bytes()).image for name in ("dalmatian", "starfish", "llama")]
    expected = serving.torch_predictor(species, device="cpu").predict(photos)

    got = serving.build_predictor(species, device="cpu").predict(photos)

    assert [r.label for r in got] == [r.label for r in expected]
    assert max(np.abs(np.subtract(a.probabilities, b.probabilities)).max() for a, b in zip(got, expected)) < 1e-4


def test_an_upload_prediction_names_the_backend(species, alice, dalmatian_jpeg, monkeypatch):
    monkeypatch.setitem(serving._cached, "key", None)
    image = uploads.image_upload(user=alice, filename="d.jpg", data=dalmatian_jpeg).image

    prediction = predictions.image_classify(image_id=image.id)

    assert prediction.backend == "onnxruntime-cpu"
    assert prediction.label == "dalmatian"


def test_serving_backend_torch_serves_through_pytorch(species, settings, fresh_onnx_dir):
    settings.SERVING_BACKEND = "torch"

    served = serving.build_predictor(species, device="cpu")

    assert isinstance(served, Predictor) and served.backend == "torch-cpu"
    assert not fresh_onnx_dir.exists()


def test_an_export_that_cannot_be_checked_falls_back_to_pytorch_unless_onnxruntime_is_required(
        species, settings, fresh_onnx_dir, tmp_path, caplog):
    settings.ONNX_CHECK_PHOTOS = tmp_path / "no-photos"

    with caplog.at_level(logging.WARNING, logger="classifier.serving"):
        served = serving.build_predictor(species, device="cpu")

    assert served.backend == "torch-cpu"
    assert "no photos to check an ONNX export against" in caplog.text
    assert not serving.onnx_path_of(species).exists()

    settings.SERVING_BACKEND = "onnxruntime"
    with pytest.raises(serving.ServingError, match="ONNX_CHECK_PHOTOS"):
        serving.build_predictor(species, device="cpu")
