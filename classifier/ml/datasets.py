"""Frozen lists of labelled images, and splits that never move an image once it has one.

An image's split is a function of its content alone (a salted hash of its SHA-256), so a
growing dataset keeps every old test image in test and every old training image out of it:
metrics stay comparable from one model version to the next. The validation split is carved
out of train the same way, with a different salt.
"""

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .cards import file_sha256
from .images import IMAGE_SUFFIXES, decode_image, is_image_name

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
DEFAULT_TEST_FRACTION = 0.3
DEFAULT_VAL_FRACTION = 0.15  # of the images that are not test


class TooFewImages(ValueError):
    """A class has too few images to train or evaluate on; the message names them."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str
    split: str | None = None  # train, val or test; None: assign it from the content hash
    sha256: str | None = None  # of the file's bytes; computed when missing

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # callers may pass strings
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"{self.path}: unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")


def image_folder(root: str | os.PathLike) -> list[Item]:
    """Every image under root/<class>/, sorted by class then file name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected an ImageFolder tree (one sub-folder per class)")
    items = [
        Item(path=path, label=class_dir.name)
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for path in sorted(class_dir.iterdir())
        if path.is_file() and is_image_name(path)
    ]
    if not items:
        raise FileNotFoundError(
            f"{root} holds no images in class sub-folders (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return items


def _unit_interval(sha256: str, salt: str) -> float:
    """A number in [0, 1) that depends only on the content hash and the salt."""
    digest = hashlib.sha256(f"{salt}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stable_split(sha256: str, *, test_fraction: float = DEFAULT_TEST_FRACTION) -> str:
    """"train" or "test", from the image content alone."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    return TEST if _unit_interval(sha256, "test") < test_fraction else TRAIN


def validation_split(sha256: str, *, val_fraction: float = DEFAULT_VAL_FRACTION) -> str:
    """"train" or "val" for an image that stable_split put in train."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return VAL if _unit_interval(sha256, "val") < val_fraction else TRAIN


def assign_splits(items: Iterable[Item], *, test_fraction: float = DEFAULT_TEST_FRACTION,
                  val_fraction: float = DEFAULT_VAL_FRACTION) -> list[Item]:
    """Items with their sha256 and split filled in; a split already given is kept."""
    out = []
    for item in items:
        sha = item.sha256 or file_sha256(item.path)
        split = item.split
        if split is None:
            split = stable_split(sha, test_fraction=test_fraction)
            if split == TRAIN:
                split = validation_split(sha, val_fraction=val_fraction)
        out.append(replace(item, sha256=sha, split=split))
    return out


def class_names(items: Iterable[Item]) -> tuple[str, ...]:
    return tuple(sorted({item.label for item in items}))


def check_min_per_class(items: Sequence[Item], minimum: int, *, what: str = "images") -> None:
    counts = Counter(item.label for item in items)
    short = {label: n for label, n in sorted(counts.items()) if n < minimum}
    if short:
        listed = ", ".join(f"{label} ({n})" for label, n in short.items())
        raise TooFewImages(f"Every class needs at least {minimum} {what}; too few in: {listed}")


def check_training_splits(items: Sequence[Item], classes: Sequence[str]) -> None:
    """Refuses a split in which some class has no training image at all."""
    counts = Counter(item.label for item in items if item.split == TRAIN)
    missing = [label for label in classes if counts[label] == 0]
    if missing:
        raise TooFewImages(
            "These classes have no image in the training split (add more images, or lower the "
            f"test/validation fractions): {', '.join(missing)}"
        )


def snapshot_sha256(items: Iterable[Item]) -> str:
    """One hash for the frozen list of (content, label, split), independent of file names and order."""
    lines = sorted(f"{item.sha256}\t{item.label}\t{item.split}" for item in items)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def split_items(items: Iterable[Item], split: str) -> list[Item]:
    return [item for item in items if item.split == split]


class ImageDataset:
    """(transformed image, class index) for each item; decoded like uploads are.

    A map-style dataset for torch's DataLoader, which needs only __len__ and __getitem__: no
    torch.utils.data.Dataset base, so that the web process can use the splits above without
    importing torch.
    """

    def __init__(self, items: Sequence[Item], classes: Sequence[str], transform: Callable):
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({item.label for item in items} - set(index))
        if unknown:
            raise ValueError(f"labels not in the class list: {', '.join(unknown)}; classes are {', '.join(classes)}")
        self.items = list(items)
        self.targets = [index[item.label] for item in self.items]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[object, int]:
        image = decode_image(Path(self.items[i].path).read_bytes()).image
        return self.transform(image), self.targets[i]
