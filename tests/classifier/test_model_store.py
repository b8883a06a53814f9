"""Model versions' files through STORAGES["models"]: published before the row exists, downloaded and
checked by a node that lacks them, and a broken object named (with its version) while the last good
version keeps serving.

The store here is a FileSystemStorage in its own folder, standing for an object store: "another
node" is a MODELS_ROOT and a cache that share no folder with the node that trained.
"""

import logging

import pytest
from django.core.files.storage import FileSystemStorage

from classifier import model_store, predictions, registry, serving, uploads
from classifier.ml.cards import CARD_FILE, file_sha256
from classifier.models import ModelVersion, TrainingRun
from classifier.training import runs

pytestmark = pytest.mark.django_db


class RefusesWeights(FileSystemStorage):
    """A store that fails on the weights, as a network store may half-way through."""

    def _save(self, name, content):
        if name.endswith(".pt"):
            raise OSError(f"the store refused {name}")
        return super()._save(name, content)


@pytest.fixture(autouse=True)
def _fresh_predictor(monkeypatch):
    monkeypatch.setitem(serving._cached, "key", None)
    monkeypatch.setitem(serving._cached, "predictor", None)


@pytest.fixture
def store(settings, tmp_path, models_root):
    location = tmp_path / "store"
    settings.STORAGES = {**settings.STORAGES, "models": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(location)}}}
    settings.MODELS_CACHE_DIR = tmp_path / "cache"
    return location


@pytest.fixture
def trained(store, label_images, species) -> ModelVersion:
    label_images({"cat": 15, "dog": 15, "llama": 15})
    run = runs.training_execute(run_id=runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL).id)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run.version


@pytest.fixture
def other_node(settings, tmp_path):
    """This process becomes a node that never saw the trainer's folders."""
    settings.MODELS_ROOT = tmp_path / "other-node" / "models"
    settings.MODELS_CACHE_DIR = tmp_path / "other-node" / "cache"
    return settings.MODELS_CACHE_DIR


def weights_name(version: ModelVersion) -> str:
    (name,) = version.card["files"]  # a head version has one weights file
    return name


def test_every_file_of_a_trained_version_is_in_the_store_with_the_card_checksums(trained, store):
    folder = store / trained.model_dir

    assert file_sha256(folder / CARD_FILE) == trained.card_sha256
    files = trained.card["files"]
    assert files and all(file_sha256(folder / name) == sha for name, sha in files.items())


def test_no_version_row_exists_until_every_file_is_in_the_store(settings, store, label_images, species):
    settings.STORAGES = {**settings.STORAGES, "models": {
        "BACKEND": f"{__name__}.RefusesWeights", "OPTIONS": {"location": str(store)}}}
    label_images({"cat": 15, "dog": 15, "llama": 15})

    run = runs.training_execute(run_id=runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL).id)

    assert run.status == TrainingRun.Status.FAILED and "the store refused" in run.error
    assert not ModelVersion.objects.filter(kind="head").exists()


def test_a_node_without_the_files_downloads_them_checked_and_predicts_the_same(trained, models_root, other_node,
                                                                             dalmatian_jpeg):
    from classifier.ml.images import decode_image
    from classifier.ml.predict import Predictor

    photo = decode_image(dalmatian_jpeg).image
    here = Predictor.from_dir(models_root / trained.model_dir).predict([photo])[0]  # the trainer's own folder
    folder = serving.model_dir_of(trained)

    assert folder == other_node / trained.card_sha256
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD_FILE, *trained.card["files"]])
    assert serving.build_predictor(trained).predict([photo])[0].label == here.label


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_broken_object_is_named_with_its_version_and_nothing_half_written_is_kept(trained, store, other_node,
                                                                                      damage):
    broken = store / trained.model_dir / weights_name(trained)
    if damage == "corrupt":
        broken.write_bytes(b"not the weights")
    else:
        broken.unlink()

    with pytest.raises(model_store.ModelStoreError) as caught:
        serving.model_dir_of(trained)

    message = str(caught.value)
    assert trained.name in message and weights_name(trained) in message
    assert ("does not match its checksum" if damage == "corrupt" else "is missing from the model store") in message
    assert not (other_node.exists() and any(other_node.iterdir()))  # no partial folder left to serve


def test_the_worker_keeps_serving_the_last_good_version_when_the_new_one_is_broken(
        trained, store, other_node, species, alice, dalmatian_jpeg, caplog):
    registry.model_promote(version=species, reason="back to zero-shot for this test")
    first = uploads.image_upload(user=alice, filename="a.jpg", data=dalmatian_jpeg).image
    assert predictions.image_classify(image_id=first.id).model_version == species
    registry.model_promote(version=trained, reason="the trained head")
    (store / trained.model_dir / weights_name(trained)).write_bytes(b"not the weights")
    second = uploads.image_upload(user=alice, filename="b.png", data=_other_bytes(dalmatian_jpeg)).image

    with caplog.at_level(logging.ERROR, logger="classifier.serving"):
        prediction = predictions.image_classify(image_id=second.id)

    assert prediction.model_version == species
    assert any(trained.name in r.getMessage() and weights_name(trained) in r.getMessage() for r in caplog.records)


def _other_bytes(jpeg: bytes) -> bytes:
    """The same photo as a PNG: another file (another content hash), the same picture."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(out, format="PNG")
    return out.getvalue()
