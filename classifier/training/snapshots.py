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
from ..ml.cards import KIND_HEAD
from ..ml.coverage import LEARNED, ZERO_SHOT, ClassPlan, plan_classes
from ..ml.datasets import TEST, TRAIN, VAL, Item, snapshot_sha256, stable_split, validation_split
from ..models import DatasetSnapshot, Image, Species


class TrainingRefused(Rejected):
    """Training cannot start with today's labels; the message says what is missing."""


def training_labels() -> dict[int, str]:
    """image id -> class name: read through a setting, so classifier never imports labeling."""
    return import_string(settings.TRAINING_LABELS_SOURCE)()


def near_duplicate_shas() -> dict[int, str]:
    """image id -> the content hash of its near-duplicate group's first image (read through a
    setting, like the labels); an image in no group is absent."""
    source = settings.NEAR_DUPLICATE_GROUPS_SOURCE
    roots = import_string(source)() if source else {}
    shas = dict(Image.objects.filter(id__in=set(roots.values())).values_list("id", "sha256"))
    return {i: shas[r] for i, r in roots.items() if r in shas}


def class_plan(items: list[Item], class_map: dict[str, list[int]]) -> ClassPlan:
    """Which classes a run on these items learns, serves by zero-shot, or does not serve yet."""
    return plan_classes(((i.label, i.split) for i in items), class_map=class_map,
                        min_per_class=settings.TRAINING_MIN_PER_CLASS)


def snapshot_items() -> tuple[list[Item], dict[str, int], dict[str, str]]:
    """Every ground-truth label as a split item (path not yet resolved), image ids by content
    hash, and the classes the run will not learn (with why); raises TrainingRefused when no
    useful version can come of them.

    Every label stays in the snapshot, the rare classes' and "other"'s too, so the test split the
    gate scores is complete; a class below the minimum is served by its zero-shot score (or not
    yet) instead of refusing the run.
    """
    labels = training_labels()
    minimum = settings.TRAINING_MIN_PER_CLASS
    items, ids = [], {}
    group_sha = near_duplicate_shas()
    for image_id, sha in Image.objects.filter(id__in=list(labels)).order_by("id").values_list("id", "sha256"):
        if sha in ids:
            continue  # a private copy of labelled content (classifier.uploads): one item per content
        # A near-duplicate takes its group's split: never one copy in train and one in test.
        split_sha = group_sha.get(image_id, sha)
        split = stable_split(split_sha, test_fraction=settings.TRAINING_TEST_FRACTION)
        if split == TRAIN:
            split = validation_split(split_sha, val_fraction=settings.TRAINING_VAL_FRACTION)
        items.append(Item(path=Path(sha), label=labels[image_id], split=split, sha256=sha))
        ids[sha] = image_id
    plan = class_plan(items, project_class_map())
    counts = dict(sorted(Counter(labels.values()).items())) or "nothing"
    if len(plan.learned) < 2:
        raise TrainingRefused(f"Training needs at least two classes with {minimum} labelled images each (one of "
                              f"them in the training split); labelled so far: {counts}. Until then the zero-shot "
                              "version serves.")
    excluded = {c: f"{s['labels']} labelled images; a class needs {minimum} to be learned: " + (
        "served by its zero-shot score" if s["how"] == ZERO_SHOT else f"not served yet, needs {s['needs']} more")
        for c, s in plan.served.items() if s["how"] != LEARNED and s["labels"]}
    return items, ids, excluded


def project_class_map() -> dict[str, list[int]]:
    """The active classes and their ImageNet indices: what a version serves beside what it learns."""
    return {s.name: list(s.imagenet_classes) for s in Species.objects.filter(active=True)}


def training_check(mode: str = KIND_HEAD) -> list[Item]:
    """Today's snapshot items; TrainingRefused if they cannot be trained on in this mode. A head
    cross-validates over train and validation together; a fine-tune stops early on validation,
    so it needs validation images of the classes it learns."""
    items, _, excluded = snapshot_items()
    if mode != KIND_HEAD and not any(i.split == VAL and i.label not in excluded for i in items):
        raise TrainingRefused("No labelled image falls in the validation split yet; label a few more.")
    return items


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
