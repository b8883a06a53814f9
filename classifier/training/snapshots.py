"""Dataset snapshots: the frozen list of (image, label, split) one training run reads.

Each image's split comes from a hash of its content (classifier.ml.datasets), so it never
moves between splits as data grows and every version is scored on the same test images.
"""

from collections import Counter, defaultdict
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from ..errors import Rejected
from ..ml.class_map import OTHER
from ..ml.datasets import (
    TEST,
    TRAIN,
    VAL,
    Item,
    TooFewImages,
    check_training_splits,
    snapshot_sha256,
    stable_split,
    validation_split,
)
from ..models import DatasetSnapshot, Image


class TrainingRefused(Rejected):
    """Training cannot start with today's labels; the message says what is missing."""


def training_labels() -> dict[int, str]:
    """image id -> class name: read through a setting, so classifier never imports labeling."""
    return import_string(settings.TRAINING_LABELS_SOURCE)()


def snapshot_items() -> tuple[list[Item], dict[str, int], dict[str, str]]:
    """Today's labelled images as split items (path not yet resolved), image ids by content hash,
    and the classes left out; raises TrainingRefused with the reason when training cannot start."""
    labels = training_labels()
    minimum = settings.TRAINING_MIN_PER_CLASS
    counts = Counter(labels.values())
    excluded = {}
    if counts.get(OTHER, 0) < minimum and OTHER in counts:
        # "Not an animal" is optional: too few of them leave the class out, not the training.
        excluded[OTHER] = f"{counts[OTHER]} labelled images; a class needs {minimum}"
    short = {label: n for label, n in sorted(counts.items()) if n < minimum and label not in excluded}
    if short:
        listed = ", ".join(f"{label} ({n})" for label, n in short.items())
        raise TrainingRefused(f"Every class needs at least {minimum} labelled images to train; too few in: {listed}")
    if len(set(counts) - set(excluded)) < 2:
        raise TrainingRefused(f"Training needs at least two classes with {minimum} labelled images each; "
                              f"labelled so far: {dict(counts) or 'nothing'}")
    items, ids = [], {}
    for image_id, sha in Image.objects.filter(id__in=list(labels)).values_list("id", "sha256"):
        label = labels[image_id]
        if label in excluded:
            continue
        split = stable_split(sha, test_fraction=settings.TRAINING_TEST_FRACTION)
        if split == TRAIN:
            split = validation_split(sha, val_fraction=settings.TRAINING_VAL_FRACTION)
        items.append(Item(path=Path(sha), label=label, split=split, sha256=sha))
        ids[sha] = image_id
    try:
        check_training_splits(items, sorted({i.label for i in items}))
    except TooFewImages as e:
        raise TrainingRefused(str(e)) from None
    if not any(i.split == VAL for i in items):
        raise TrainingRefused("No labelled image falls in the validation split yet; label a few more.")
    return items, ids, excluded


def training_check() -> None:
    """Raises TrainingRefused if today's labels cannot be trained on."""
    snapshot_items()


def snapshot_create() -> DatasetSnapshot:
    """Freezes today's labels; the same labels give the same snapshot (by content hash)."""
    items, ids, excluded = snapshot_items()
    digest = snapshot_sha256(items)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {TRAIN: 0, VAL: 0, TEST: 0})
    for item in items:
        counts[item.label][item.split] += 1
    rows = sorted([ids[i.sha256], i.sha256, i.label, i.split] for i in items)
    try:
        with transaction.atomic():
            snapshot, _ = DatasetSnapshot.objects.get_or_create(sha256=digest, defaults=dict(
                items=rows, classes=sorted(counts), counts=dict(counts), excluded=excluded,
                test_fraction=settings.TRAINING_TEST_FRACTION, val_fraction=settings.TRAINING_VAL_FRACTION,
            ))
    except IntegrityError:
        snapshot = DatasetSnapshot.objects.get(sha256=digest)
    return snapshot
