"""`manage.py classify PATH...`: one JSON line per image, nothing stored."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from classifier import serving
from classifier.models import Image, Prediction
from tests.helpers import demo_photo

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_predictor(monkeypatch):
    # Test databases roll back, so another test's version may have had this test's id.
    monkeypatch.setitem(serving._cached, "version_id", None)


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    (folder / "a_dalmatian.jpg").write_bytes(demo_photo("dalmatian").read_bytes())
    (folder / "nested" / "b_flamingo.JPG").write_bytes(demo_photo("flamingo").read_bytes())
    (folder / "c_broken.png").write_bytes(b"this is not a png")
    (folder / "notes.txt").write_text("not an image suffix: skipped")
    return folder


def classify(*args) -> tuple[list[dict], CommandError | None]:
    out = io.StringIO()
    try:
        call_command("classify", *map(str, args), stdout=out)
        error = None
    except CommandError as e:
        error = e
    return [json.loads(line) for line in out.getvalue().splitlines()], error


def test_it_prints_one_line_per_image_in_a_folder(species, photo_dir):
    lines, _ = classify(photo_dir)
    assert [line["path"] for line in lines] == [
        str(photo_dir / "a_dalmatian.jpg"),
        str(photo_dir / "c_broken.png"),
        str(photo_dir / "nested" / "b_flamingo.JPG"),
    ]


def test_it_prints_the_top_classes_and_the_version(species, photo_dir):
    lines, _ = classify(photo_dir)
    dalmatian, _, flamingo = lines
    assert dalmatian["top"][0]["label"] == "dalmatian"
    assert flamingo["top"][0]["label"] == "flamingo"
    assert dalmatian["model_version"] == species.name
    assert len(dalmatian["top"]) == 5
    ps = [s["p"] for s in dalmatian["top"]]
    assert ps == sorted(ps, reverse=True)


def test_it_prints_an_error_line_for_a_broken_file_and_exits_with_1(species, photo_dir):
    lines, error = classify(photo_dir)
    assert lines[1] == {"path": str(photo_dir / "c_broken.png"), "error": lines[1]["error"]}
    assert "not an image" in lines[1]["error"]
    assert error is not None and error.returncode == 1
    assert "1 of 3" in str(error)


def test_it_exits_normally_when_every_file_is_an_image(species):
    lines, error = classify(demo_photo("starfish"))
    assert error is None
    assert lines[0]["top"][0]["label"] == "starfish"


def test_it_respects_top_k(species):
    lines, _ = classify(demo_photo("dalmatian"), "--top-k", "2")
    assert len(lines[0]["top"]) == 2


def test_it_names_a_missing_path(species, tmp_path):
    missing = tmp_path / "no-such-photo.jpg"
    with pytest.raises(CommandError, match="no-such-photo.jpg"):
        call_command("classify", str(missing), stdout=io.StringIO())


def test_it_writes_nothing_to_the_database(species, photo_dir):
    classify(photo_dir)
    assert Prediction.objects.count() == 0
    assert Image.objects.count() == 0


def test_it_batches_more_images_than_one_batch(species, tmp_path):
    data = demo_photo("flamingo").read_bytes()
    for i in range(18):  # more than the batch size of 16
        (tmp_path / f"{i:02d}.jpg").write_bytes(data)
    lines, error = classify(tmp_path)
    assert error is None
    assert [line["path"] for line in lines] == [str(tmp_path / f"{i:02d}.jpg") for i in range(18)]
    assert {line["top"][0]["label"] for line in lines} == {"flamingo"}


def test_it_uses_a_zero_shot_version_when_there_is_none(db):
    lines, error = classify(demo_photo("dalmatian"))
    assert error is None
    assert lines[0]["top"] == [{"label": "other", "p": 1.0}]
