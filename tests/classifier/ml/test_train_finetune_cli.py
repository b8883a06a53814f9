"""`python -m classifier.ml.train --mode finetune`: one epoch on the CPU, then served."""

import pytest
import torch

from classifier.ml.datasets import image_folder
from classifier.ml.images import decode_image
from classifier.ml.predict import ModelCard, Predictor
from tests.classifier.ml.conftest import (
    CLASSES,
    FINETUNE_SIZE,
    finetune_args,
    last_json_line,
    run_module,
)


@pytest.fixture(scope="module")
def finetune_run(tiny_tree, embedding_cache, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    out, checkpoint = models / "finetune-v1", models / "finetune.checkpoint.pt"
    args = finetune_args(tiny_tree, out, checkpoint, epochs=1, cache=embedding_cache)
    proc = run_module("classifier.ml.train", *args)
    assert proc.returncode == 0, proc.stderr
    return out, checkpoint, proc


def test_it_fine_tunes_for_an_epoch_and_prints_the_metrics(finetune_run):
    _, _, proc = finetune_run
    summary = last_json_line(proc.stdout)
    assert summary["mode"] == "finetune"
    assert summary["epochs_run"] == 1 and summary["best_epoch"] in (0, 1)  # 0: the linear probe stayed best
    assert summary["init"] == "linear_probe"
    assert {"accuracy", "macro_f1", "ece_before", "ece_after", "temperature", "n_train", "n_val", "n_test",
            "seconds"} <= set(summary)
    assert "epoch 1/1:" in proc.stderr


def test_it_writes_the_whole_network_and_its_card(finetune_run):
    out, _, _ = finetune_run
    card = ModelCard.load(out, verify=True)
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.pt"]
    # Every version serves "other" (issue 11): the network learns the classes, "other" is zero-shot's.
    assert card.kind == "finetune" and card.classes == CLASSES + ("other",) and card.head_classes == CLASSES
    assert card.preprocessing.crop_size == FINETUNE_SIZE
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["head.weight"].shape == (len(CLASSES), 1280)
    assert any(key.startswith("trunk.") for key in state)
    assert [row["epoch"] for row in card.training["history"]] == [0, 1]  # 0: the linear probe


def test_it_saves_a_plain_dict_checkpoint_each_epoch(finetune_run):
    _, checkpoint, _ = finetune_run
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["epoch"] == 1
    assert {"model", "optimizer", "lr_scheduler", "classes", "snapshot_sha256", "history"} <= set(saved)


def test_the_predictor_serves_the_fine_tuned_network(finetune_run, tiny_tree):
    out, _, _ = finetune_run
    predictor = Predictor.from_dir(out)
    images = [decode_image(item.path.read_bytes()).image for item in image_folder(tiny_tree)[:3]]

    results = predictor.predict(images, top_k=4)  # the three classes and "other" (issue 11)

    assert [sorted(s.label for s in r.top) for r in results] == [sorted(CLASSES + ("other",))] * 3
    assert all(abs(sum(r.probabilities) - 1) < 1e-5 for r in results)
    assert results[0].embedding.shape == (1280,)
