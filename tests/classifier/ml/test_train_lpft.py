"""LP-FT: a fine-tune starts from the very head that head mode fits, and keeps it unless
fine-tuning does better on validation; --no-init-head starts from a random head instead."""

import pytest
import torch

from classifier.ml.predict import ModelCard
from classifier.ml.train import TrainConfig, fit
from tests.classifier.ml.conftest import FINETUNE_SIZE, SPLIT_KWARGS


@pytest.fixture(scope="module")
def head_and_finetune(tiny_tree, embedding_cache, tmp_path_factory):
    models = tmp_path_factory.mktemp("lpft")
    common = dict(data_dir=tiny_tree, cache_dir=embedding_cache, batch_size=6, **SPLIT_KWARGS)
    # The backbone's own preprocessing and plain features, as the app trains a head.
    head = fit(TrainConfig(out=models / "head", mode="head", tta=False, **common))
    finetune = fit(TrainConfig(out=models / "finetune", mode="finetune", epochs=1, workers=0,
                               checkpoint=models / "finetune.checkpoint.pt", **common))
    return head, finetune


def test_epoch_zero_is_the_head_modes_linear_probe(head_and_finetune):
    head, finetune = head_and_finetune
    probe = finetune.history[0]
    assert probe["epoch"] == 0 and probe["init"] == "linear_probe"
    assert probe["weight_decay"] == head.summary["weight_decay"]
    # Since issue 15 head mode reports cross-validated figures over train and validation (its
    # val_accuracy), the probe its accuracy on the validation split: the same fit (weights: the
    # next test), scored on different images, so only the choice of weight decay is compared.
    assert head.summary["cv_images"] == head.summary["n_fit"]
    assert [row["epoch"] for row in finetune.history] == [0, 1]


def test_the_probe_is_kept_unless_fine_tuning_beats_it_on_validation(head_and_finetune):
    head, finetune = head_and_finetune
    probe, epoch1 = finetune.history
    best = finetune.summary["best_epoch"]
    assert best == (1 if epoch1["val_macro_f1"] > probe["val_macro_f1"] else 0)
    if best == 0:  # the saved network's classifier is the head, weights and bias
        head_state = torch.load(head.model_dir / "head.pt", weights_only=True)
        state = torch.load(finetune.model_dir / "model.pt", weights_only=True)
        assert torch.allclose(state["head.weight"], head_state["weight"], atol=1e-6)
        assert torch.allclose(state["head.bias"], head_state["bias"], atol=1e-6)


def test_the_card_records_the_recipe(head_and_finetune):
    _, finetune = head_and_finetune
    training = ModelCard.load(finetune.model_dir).training
    assert training["init"] == "linear_probe"
    assert training["lr"] == 3e-5 and training["label_smoothing"] == 0.0 and training["augment"] == "light"
    assert finetune.summary["init"] == "linear_probe" and finetune.summary["epochs_run"] == 1


def test_no_init_head_starts_from_a_random_head(tiny_tree, embedding_cache, tmp_path):
    result = fit(TrainConfig(out=tmp_path / "ft", data_dir=tiny_tree, mode="finetune", epochs=1, workers=0,
                             init_head=False, image_size=FINETUNE_SIZE, batch_size=6, cache_dir=embedding_cache,
                             checkpoint=tmp_path / "ft.checkpoint.pt", **SPLIT_KWARGS))
    assert [row["epoch"] for row in result.history] == [1]
    training = ModelCard.load(result.model_dir).training
    assert training["init"] == "random"
    assert training["lr"] == 1e-4 and training["label_smoothing"] == 0.1 and training["augment"] == "strong"
