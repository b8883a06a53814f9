"""The backbone registry: names, weights found locally (never downloaded), preprocessing."""

import os

import pytest
import torch
import torchvision
from PIL import Image

from classifier.ml import backbones
from classifier.ml.backbone_specs import TORCHVISION_WEIGHTS
from classifier.ml.backbones import Backbone, UnknownBackbone, WeightsNotFound, get_spec, load_backbone


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def test_it_lists_the_registered_backbones():
    names = backbones.available_backbones()
    for name in ("efficientnet_lite0", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"):
        assert name in names
    assert names == sorted(names)


def test_it_names_the_valid_backbones_for_an_unknown_one():
    with pytest.raises(UnknownBackbone) as excinfo:
        get_spec("resnet9000")
    message = str(excinfo.value)
    assert "resnet9000" in message
    for name in backbones.available_backbones():
        assert name in message


def test_it_refuses_to_load_an_unknown_backbone():
    with pytest.raises(UnknownBackbone):
        load_backbone("not_a_backbone")


def test_it_names_the_file_and_folders_when_torchvision_weights_are_missing(empty_torch_hub, no_downloads, tmp_path):
    extra = tmp_path / "my-weights"
    extra.mkdir()
    with pytest.raises(WeightsNotFound) as excinfo:
        load_backbone("resnet50", weights_dir=extra)
    message = str(excinfo.value)
    assert get_spec("resnet50").weights_file in message
    assert str(extra) in message
    assert str(empty_torch_hub / "checkpoints") in message


def test_it_does_not_download_unless_asked(empty_torch_hub, no_downloads):
    # no_downloads turns a download attempt into an AssertionError instead of WeightsNotFound
    with pytest.raises(WeightsNotFound):
        load_backbone("mobilenet_v3_large")


def test_it_reports_a_missing_explicit_weights_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsNotFound, match="nope.pth"):
        load_backbone("resnet50", weights_path=missing)


def test_it_uses_a_weights_file_found_in_weights_dir(empty_torch_hub, no_downloads, tmp_path):
    net = torchvision.models.get_model("mobilenet_v3_large", weights=None)
    torch.save(net.state_dict(), tmp_path / get_spec("mobilenet_v3_large").weights_file)

    backbone = load_backbone("mobilenet_v3_large", weights_dir=tmp_path)

    assert isinstance(backbone, Backbone)
    assert backbone.feature_dim == 960
    assert not backbone.training
    with torch.inference_mode():
        features, logits = backbone(torch.zeros(1, 3, 224, 224))
    assert features.shape == (1, 960)
    assert logits.shape == (1, 1000)
    loaded = dict(backbone.named_parameters())
    assert torch.equal(loaded["imagenet_head.3.weight"], net.classifier[3].weight)


def test_it_finds_weights_through_the_weights_dir_variable(empty_torch_hub, no_downloads, tmp_path, monkeypatch):
    net = torchvision.models.get_model("mobilenet_v3_large", weights=None)
    torch.save(net.state_dict(), tmp_path / get_spec("mobilenet_v3_large").weights_file)
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))

    assert load_backbone("mobilenet_v3_large").feature_dim == 960


def test_it_loads_lite0_offline(empty_torch_hub, no_downloads):
    backbone = load_backbone("efficientnet_lite0")
    assert backbone.name == "efficientnet_lite0"
    assert backbone.feature_dim == 1280


def test_it_gives_lite0_features_and_imagenet_logits(lite0):
    with torch.inference_mode():
        features, logits = lite0(torch.zeros(1, 3, 224, 224))
    assert features.shape == (1, 1280)
    assert logits.shape == (1, 1000)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()


def test_it_pins_lite0_to_the_tflite_preprocessing():
    pre = get_spec("efficientnet_lite0").preprocessing
    assert pre.mean == pytest.approx((127 / 255,) * 3)
    assert pre.std == pytest.approx((128 / 255,) * 3)
    assert pre.interpolation == "bicubic"
    assert (pre.resize_size, pre.crop_size) == (224, 224)


def test_it_maps_lite0_pixels_to_minus_one_to_one():
    pre = get_spec("efficientnet_lite0").preprocessing
    batch = pre.batch([Image.new("RGB", (300, 300), (127, 255, 0))])
    assert batch.shape == (1, 3, 224, 224)
    assert batch[0, 0].abs().max() < 1e-5  # (127 - 127) / 128
    assert torch.allclose(batch[0, 1], torch.ones(224, 224))  # (255 - 127) / 128
    assert torch.allclose(batch[0, 2], torch.full((224, 224), -127 / 128))


@pytest.mark.parametrize("name", sorted(TORCHVISION_WEIGHTS))
def test_it_takes_torchvision_preprocessing_and_weights_from_the_weights_entry(name):
    # The specs are written out (the web process reads them without torchvision): they must be
    # what torchvision's own weights entry says.
    enum_name, member = TORCHVISION_WEIGHTS[name].split(".")
    weights = getattr(torchvision.models, enum_name)[member]
    expected = weights.transforms()
    spec = get_spec(name)
    assert spec.preprocessing.crop_size == expected.crop_size[0]
    assert spec.preprocessing.resize_size == expected.resize_size[0]
    assert spec.preprocessing.mean == tuple(expected.mean)
    assert spec.preprocessing.std == tuple(expected.std)
    assert spec.preprocessing.interpolation == expected.interpolation.value
    assert spec.weights_url == weights.url
    assert spec.weights_file == os.path.basename(weights.url)


def test_every_registered_backbone_can_be_built():
    assert sorted(backbones._BUILDERS) == backbones.available_backbones()
