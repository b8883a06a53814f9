"""`python -m classifier.ml.predict --model MODEL_DIR PATH_OR_DIR...`: one JSON line per image."""

import json

from tests.classifier.ml.conftest import PER_CLASS, run_module


def test_it_prints_one_json_line_per_image(head_model, tiny_tree, tmp_path):
    folder = tiny_tree / "red_blobs"
    single = tiny_tree / "green_stripes" / "green_stripes_00.png"
    (tmp_path / "notes.png").write_text("not a picture")

    proc = run_module("classifier.ml.predict", "--model", str(head_model.model_dir), str(folder), str(single),
                      str(tmp_path / "notes.png"), "--top-k", "2")

    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert len(lines) == PER_CLASS + 2
    assert lines[0]["path"].endswith("red_blobs_00.png") and lines[-2]["path"] == str(single)
    for line in lines[:-1]:
        assert [set(t) for t in line["top"]] == [{"label", "p"}] * 2
        assert line["top"][0]["p"] >= line["top"][1]["p"]
    assert [line["top"][0]["label"] for line in lines[:-1]] == ["red_blobs"] * PER_CLASS + ["green_stripes"]
    # A file that is not an image gets an error line, and the exit status says so.
    assert lines[-1]["path"] == str(tmp_path / "notes.png") and "error" in lines[-1]
    assert proc.returncode == 1
