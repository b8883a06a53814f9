"""`python -m classifier.ml.train --mode head` on generated images."""

import pytest

from classifier.ml import train
from classifier.ml.predict import ModelCard
from tests.classifier.ml.conftest import (
    CLASSES,
    PER_CLASS,
    SPLIT_ARGS,
    last_json_line,
    run_module,
    write_tiny_tree,
)

SUMMARY_KEYS = {"accuracy", "macro_f1", "ece_before", "ece_after", "temperature", "n_train", "n_val", "n_test",
                "seconds", "mode", "backbone"}


@pytest.fixture(scope="module")
def head_run(tiny_tree, embedding_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "head-v1"
    proc = run_module("classifier.ml.train", "--data", str(tiny_tree), "--out", str(out), "--mode", "head",
                      "--cache-dir", str(embedding_cache), "--batch-size", "8", *SPLIT_ARGS)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_it_prints_the_metrics_as_json_on_the_last_line(head_run):
    _, proc = head_run
    summary = last_json_line(proc.stdout)
    assert SUMMARY_KEYS <= set(summary)
    assert summary["mode"] == "head" and summary["backbone"] == "efficientnet_lite0"
    assert summary["n_train"] + summary["n_val"] + summary["n_test"] == len(CLASSES) * PER_CLASS
    assert summary["accuracy"] >= 0.8  # three classes a blind man could tell apart
    assert summary["temperature"] > 0


def test_it_reports_progress_on_stderr(head_run):
    _, proc = head_run
    assert "embed:" in proc.stderr and "fit: done" in proc.stderr


def test_it_writes_a_card_and_a_linear_head_whose_checksums_verify(head_run):
    out, _ = head_run
    card = ModelCard.load(out, verify=True)
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "head.pt"]
    assert card.kind == "head"
    # Every version serves "other" (issue 11): the head learns the classes, "other" is zero-shot's.
    assert card.classes == CLASSES + ("other",) and card.head_classes == CLASSES
    assert {c: s["how"] for c, s in card.served.items()} == {**dict.fromkeys(CLASSES, "learned"), "other": "zero_shot"}
    assert card.tta is True
    assert set(card.files) == {"head.pt"}
    assert card.metrics["test"]["confusion_matrix"]
    training = card.training
    assert training["seed"] == 0 and training["n_images"] == len(CLASSES) * PER_CLASS
    assert len(training["snapshot_sha256"]) == 64
    assert training["hardware"]["device"] == "cpu"


def test_a_class_with_too_few_images_does_not_refuse_the_run(tmp_path, embedding_cache):
    # Before issue 11 this refused the run ("red_blobs (2)"); now the class is listed as not served.
    root = write_tiny_tree(tmp_path / "images", per_class=8)
    for extra in sorted((root / "red_blobs").iterdir())[2:]:
        extra.unlink()

    code = train.main(["--data", str(root), "--out", str(tmp_path / "model"),
                       "--cache-dir", str(embedding_cache), "--no-tta", *SPLIT_ARGS, "--min-per-class", "5"])

    assert code == 0
    card = ModelCard.load(tmp_path / "model")
    assert "red_blobs" not in card.classes and "red_blobs" not in card.head_classes
    assert card.served["red_blobs"] == {"how": "not_served", "labels": 2, "needs": 3}


def test_it_refuses_fewer_than_two_learnable_classes_naming_the_counts(tmp_path, capsys):
    root = write_tiny_tree(tmp_path / "images", per_class=6)
    for name in ("red_blobs", "green_stripes"):
        for extra in sorted((root / name).iterdir())[2:]:
            extra.unlink()

    code = train.main(["--data", str(root), "--out", str(tmp_path / "model"), "--min-per-class", "5"])

    assert code == 2
    err = capsys.readouterr().err
    assert "at least two classes" in err and "red_blobs (2)" in err
    assert not (tmp_path / "model").exists()


def test_it_refuses_an_existing_model_dir(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    code = train.main(["--data", str(tmp_path), "--out", str(tmp_path / "model")])
    assert code == 2
    assert "already exists" in capsys.readouterr().err


def test_it_names_the_valid_modes_and_backbones(tmp_path):
    with pytest.raises(ValueError, match="head, finetune"):
        train.TrainConfig(out=tmp_path / "m", data_dir=tmp_path, mode="magic")
    with pytest.raises(KeyError, match="efficientnet_lite0"):
        train.TrainConfig(out=tmp_path / "m", data_dir=tmp_path, backbone="alexnet_xl")
