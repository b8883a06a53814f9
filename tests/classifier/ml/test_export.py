"""ONNX export of every card kind, checked against PyTorch on the real demo photos."""

import numpy as np
import onnx
import pytest
import torch

from classifier.ml import export
from classifier.ml.artifacts import write_model_dir
from classifier.ml.backbones import load_backbone
from classifier.ml.export import ExportCheckFailed, export_onnx
from classifier.ml.images import decode_image
from classifier.ml.networks import ImageClassifier
from classifier.ml.ort import CARD_METADATA_KEY, card_json
from classifier.ml.predict import KIND_FINETUNE, ModelCard, Predictor, file_sha256
from classifier.ml.preprocessing import Preprocessing
from classifier.ml.zero_shot import default_mapping
from tests.helpers import demo_photo

CLASSES = ["dalmatian", "flamingo", "starfish", "llama"]
PHOTOS = ["dalmatian", "flamingo", "starfish", "beaver"]


@pytest.fixture(scope="module")
def photos():
    return [decode_image(demo_photo(label).read_bytes()).image for label in PHOTOS]


@pytest.fixture(scope="module")
def zero_shot_predictor() -> Predictor:
    return Predictor(ModelCard.zero_shot(backbone="efficientnet_lite0", class_map=default_mapping(CLASSES)))


def assert_matches_pytorch(report, predictor, path, n_images):
    assert report.max_abs_diff_probabilities < 1e-4
    assert report.max_abs_diff_embedding < 1e-3
    assert report.n_images == n_images
    assert report.opset == export.DEFAULT_OPSET
    assert report.sha256 == file_sha256(path)
    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert stored[CARD_METADATA_KEY] == card_json(predictor.card)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_it_exports_a_zero_shot_card_that_matches_pytorch(zero_shot_predictor, photos, tmp_path):
    path = tmp_path / "model.onnx"

    report = export_onnx(zero_shot_predictor, path, check_images=photos)

    assert_matches_pytorch(report, zero_shot_predictor, path, len(photos))
    assert report.onnxruntime_version and report.seconds > 0
    assert report.to_dict()["path"] == str(path)


def test_it_exports_a_trained_head_with_flip_averaging(head_model, photos, tmp_path):
    predictor = Predictor.from_dir(head_model.model_dir)
    assert predictor.card.tta  # heads are trained (and served) on flip-averaged embeddings

    report = export_onnx(predictor, tmp_path / "model.onnx", check_images=photos[:2])

    assert_matches_pytorch(report, predictor, tmp_path / "model.onnx", 2)


def test_it_exports_a_finetuned_network_at_its_own_input_size(photos, tmp_path):
    torch.manual_seed(0)
    network = ImageClassifier(load_backbone("efficientnet_lite0").trunk, 1280, 3)
    small = Preprocessing(resize_size=72, crop_size=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    card = ModelCard(kind=KIND_FINETUNE, backbone="efficientnet_lite0", classes=("a", "b", "c"),
                     preprocessing=small, temperature=1.5, files={"model.pt": ""})
    card = write_model_dir(tmp_path / "v3", card, {"model.pt": network.state_dict()})
    predictor = Predictor(card, model_dir=tmp_path / "v3")

    report = export_onnx(predictor, tmp_path / "onnx" / "model.onnx", check_images=photos)

    assert_matches_pytorch(report, predictor, tmp_path / "onnx" / "model.onnx", len(photos))


def test_it_writes_nothing_when_the_check_fails(zero_shot_predictor, photos, tmp_path, monkeypatch):
    real = export._onnx_outputs

    def drifting(session, batch):  # as if the exporter had mistranslated an operator
        probabilities, *embeddings = real(session, batch)
        return [probabilities + np.float32(2e-4), *embeddings]

    monkeypatch.setattr(export, "_onnx_outputs", drifting)

    with pytest.raises(ExportCheckFailed, match=r"max abs difference of probabilities 0\.0002.*nothing was written"):
        export_onnx(zero_shot_predictor, tmp_path / "v1" / "model.onnx", check_images=photos[:1])
    assert list((tmp_path / "v1").iterdir()) == []


def test_it_refuses_an_empty_check_and_an_existing_file(zero_shot_predictor, photos, tmp_path):
    with pytest.raises(ValueError, match="check_images is empty"):
        export_onnx(zero_shot_predictor, tmp_path / "model.onnx", check_images=[])
    (tmp_path / "model.onnx").write_bytes(b"an older export")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(zero_shot_predictor, tmp_path / "model.onnx", check_images=photos[:1])
    assert (tmp_path / "model.onnx").read_bytes() == b"an older export"
