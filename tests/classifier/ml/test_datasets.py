"""Frozen item lists and content-hash splits: an image never moves between splits."""

import hashlib

import pytest
import torch

from classifier.ml.cards import file_sha256
from classifier.ml.datasets import (
    TEST,
    TRAIN,
    VAL,
    ImageDataset,
    Item,
    TooFewImages,
    assign_splits,
    check_min_per_class,
    check_training_splits,
    image_folder,
    snapshot_sha256,
    stable_split,
)
from tests.classifier.ml.conftest import CLASSES, tiny_image, write_tiny_tree


def fake_sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_it_lists_images_by_class_then_name_and_skips_other_files(tmp_path):
    for label, name in [("zebra", "b.JPG"), ("zebra", "a.png"), ("ant", "z.webp"), ("ant", "notes.txt")]:
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / name).write_bytes(b"x")
    (tmp_path / "loose.jpg").write_bytes(b"x")

    items = image_folder(tmp_path)

    assert [(i.label, i.path.name) for i in items] == [("ant", "z.webp"), ("zebra", "a.png"), ("zebra", "b.JPG")]


def test_it_names_the_folder_that_holds_no_images(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        image_folder(tmp_path)


def test_it_never_moves_an_old_image_between_splits_when_images_are_added(tmp_path):
    root = write_tiny_tree(tmp_path / "images", per_class=6)
    before = {i.sha256: i.split for i in assign_splits(image_folder(root))}

    write_tiny_tree(root, per_class=10, start=6)
    after = {i.sha256: i.split for i in assign_splits(image_folder(root))}

    assert len(after) == len(before) + 10 * len(CLASSES)
    assert {sha: after[sha] for sha in before} == before


def test_it_splits_by_content_not_by_name(tmp_path):
    tiny_image("red_blobs", 0).save(tmp_path / "one.png")
    (tmp_path / "copy.png").write_bytes((tmp_path / "one.png").read_bytes())

    sha = file_sha256(tmp_path / "one.png")

    assert sha == file_sha256(tmp_path / "copy.png")
    assert stable_split(sha) == stable_split(file_sha256(tmp_path / "copy.png"))


def test_it_puts_about_the_test_fraction_in_test():
    splits = [stable_split(fake_sha(i), test_fraction=0.3) for i in range(20_000)]
    assert splits.count(TEST) / len(splits) == pytest.approx(0.3, abs=0.015)


def test_it_takes_validation_from_train_only():
    items = assign_splits([Item(path=f"{i}.png", label="a", sha256=fake_sha(i)) for i in range(2000)],
                          test_fraction=0.3, val_fraction=0.2)
    test_shas = {i.sha256 for i in items if i.split == TEST}
    assert all(stable_split(i.sha256, test_fraction=0.3) == TRAIN for i in items if i.split == VAL)
    assert len(test_shas) / len(items) == pytest.approx(0.3, abs=0.04)
    assert sum(i.split == VAL for i in items) / len(items) == pytest.approx(0.7 * 0.2, abs=0.03)


def test_it_keeps_a_split_it_is_given():
    items = assign_splits([Item(path="a.png", label="a", split=TEST, sha256=fake_sha(1))], test_fraction=0.0)
    assert items[0].split == TEST


def test_it_refuses_an_unknown_split_naming_the_valid_ones():
    with pytest.raises(ValueError, match="train, val, test"):
        Item(path="a.png", label="a", split="holdout")


def test_it_names_the_classes_with_too_few_images():
    items = [Item(f"{label}{i}.png", label) for label, n in [("cat", 5), ("dog", 2), ("emu", 1)] for i in range(n)]
    with pytest.raises(TooFewImages) as excinfo:
        check_min_per_class(items, 3)
    message = str(excinfo.value)
    assert "dog (2)" in message and "emu (1)" in message
    assert "cat" not in message


def test_it_refuses_a_class_with_no_training_image():
    items = [Item("a.png", "cat", TRAIN), Item("b.png", "dog", TEST)]
    with pytest.raises(TooFewImages, match="dog"):
        check_training_splits(items, ["cat", "dog"])


def test_it_hashes_a_snapshot_whatever_the_order_and_file_names():
    a = [Item("x/1.png", "cat", TRAIN, fake_sha(1)), Item("x/2.png", "dog", TEST, fake_sha(2))]
    b = [Item("y/2.png", "dog", TEST, fake_sha(2)), Item("y/1.png", "cat", TRAIN, fake_sha(1))]
    relabelled = [Item("x/1.png", "dog", TRAIN, fake_sha(1)), a[1]]
    assert snapshot_sha256(a) == snapshot_sha256(b)
    assert snapshot_sha256(a) != snapshot_sha256(relabelled)


def test_it_decodes_items_into_transformed_tensors_and_class_indices(tiny_tree):
    items = image_folder(tiny_tree)[:2]
    dataset = ImageDataset(items, CLASSES, lambda im: torch.tensor(im.size))

    image, target = dataset[0]

    assert len(dataset) == 2
    assert image.tolist() == [48, 48]
    assert target == CLASSES.index(items[0].label)


def test_it_refuses_a_label_outside_the_class_list():
    with pytest.raises(ValueError, match="emu"):
        ImageDataset([Item("a.png", "emu")], ["cat", "dog"], transform=None)
