"""Model directories appear whole or not at all, and their files match the card's checksums."""

import json
from dataclasses import replace

import pytest
import torch

from classifier.ml import artifacts
from classifier.ml.artifacts import write_model_dir
from classifier.ml.backbones import get_spec
from classifier.ml.predict import CARD_FILE, ModelCard, ModelDirError


@pytest.fixture
def card() -> ModelCard:
    return ModelCard(kind="head", backbone="efficientnet_lite0", classes=("cat", "dog"),
                     preprocessing=get_spec("efficientnet_lite0").preprocessing, temperature=1.5,
                     files={"head.pt": ""})


@pytest.fixture
def weights() -> dict:
    return {"head.pt": torch.nn.Linear(1280, 2).state_dict()}


def test_it_writes_the_card_with_the_checksum_of_each_file(tmp_path, card, weights):
    written = write_model_dir(tmp_path / "v1", card, weights)

    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [CARD_FILE, "head.pt"]
    assert ModelCard.load(tmp_path / "v1") == written
    assert len(written.files["head.pt"]) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]


def test_it_leaves_no_model_dir_when_writing_fails(tmp_path, card, weights, monkeypatch):
    real_save = torch.save

    def save_then_fail(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_model_dir(tmp_path / "v1", card, weights)

    assert list(tmp_path.iterdir()) == []


def test_it_never_changes_a_model_dir_in_place(tmp_path, card, weights):
    write_model_dir(tmp_path / "v1", card, weights)
    with pytest.raises(FileExistsError, match="v1"):
        write_model_dir(tmp_path / "v1", card, weights)


def test_it_replaces_a_model_dir_when_asked(tmp_path, card, weights):
    write_model_dir(tmp_path / "v1", card, weights)
    write_model_dir(tmp_path / "v1", replace(card, temperature=2.0), weights, overwrite=True)

    assert ModelCard.load(tmp_path / "v1").temperature == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]


def test_it_refuses_a_weights_file_that_does_not_match_its_checksum(tmp_path, card, weights):
    write_model_dir(tmp_path / "v1", card, weights)
    torch.save(torch.nn.Linear(1280, 2).state_dict(), tmp_path / "v1" / "head.pt")

    with pytest.raises(ModelDirError, match="head.pt"):
        ModelCard.load(tmp_path / "v1")


def test_it_names_a_folder_without_a_card(tmp_path):
    with pytest.raises(ModelDirError, match=CARD_FILE):
        ModelCard.load(tmp_path)


def test_it_stores_plain_json(tmp_path, card, weights):
    write_model_dir(tmp_path / "v1", card, weights)
    data = json.loads((tmp_path / "v1" / CARD_FILE).read_text())
    assert data["kind"] == "head" and data["temperature"] == 1.5 and data["classes"] == ["cat", "dog"]
