"""A fine-tune interrupted after an epoch continues from its checkpoint, not from scratch."""

import torch

from classifier.ml import train
from classifier.ml.predict import ModelCard
from tests.classifier.ml.conftest import finetune_args, last_json_line, run_module


def test_it_resumes_from_the_saved_epoch(tiny_tree, embedding_cache, tmp_path, capsys):
    checkpoint = tmp_path / "run.checkpoint.pt"
    assert train.main(finetune_args(tiny_tree, tmp_path / "v1", checkpoint, epochs=1, cache=embedding_cache)) == 0
    capsys.readouterr()
    first = torch.load(checkpoint, weights_only=False)

    proc = run_module("classifier.ml.train", *finetune_args(tiny_tree, tmp_path / "v2", checkpoint, epochs=2,
                                                           cache=embedding_cache), "--resume")

    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc.stdout)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 2
    assert "epoch 1/2:" not in proc.stderr and "epoch 2/2:" in proc.stderr
    history = ModelCard.load(tmp_path / "v2").training["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]  # 0: the linear probe it started from
    assert history[:2] == first["history"][:2]
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2


def test_it_refuses_a_checkpoint_from_another_dataset(tiny_tree, embedding_cache, tmp_path, capsys):
    checkpoint = tmp_path / "run.checkpoint.pt"
    torch.save({"classes": ["cat", "dog"], "snapshot_sha256": "0" * 64}, checkpoint)

    code = train.main(finetune_args(tiny_tree, tmp_path / "v1", checkpoint, epochs=1, cache=embedding_cache)
                      + ["--resume"])

    assert code == 2
    assert "another dataset" in capsys.readouterr().err
    assert not (tmp_path / "v1").exists()
