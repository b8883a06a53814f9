"""Double annotation and agreement: which images go to a second annotator, which two
annotators labelled differently, and Cohen's kappa for each pair."""

from collections import defaultdict

from django.conf import settings
from django.db.models import Count

from .models import Annotation
from .selectors import live_labels


def wants_second_opinion(sha256: str) -> bool:
    """Whether an image goes to two annotators: a stable share of images, by content hash."""
    return int(sha256[:8], 16) % 100 < settings.DOUBLE_ANNOTATION_PERCENT


def awaiting_second_annotator() -> list[int]:
    """Images chosen for double annotation that have exactly one annotator's label so far."""
    if settings.DOUBLE_ANNOTATION_PERCENT <= 0:
        return []
    reviewed = live_labels().filter(role=Annotation.Role.REVIEWER).values("image_id")
    once = (
        live_labels().filter(role=Annotation.Role.ANNOTATOR).exclude(image_id__in=reviewed)
        .values("image_id").annotate(n=Count("user_id", distinct=True)).filter(n=1)
        .values_list("image_id", "image__sha256")
    )
    return [image_id for image_id, sha in once if wants_second_opinion(sha)]


def disagreements() -> list[int]:
    """Images two annotators labelled differently and no reviewer has settled yet."""
    reviewed = live_labels().filter(role=Annotation.Role.REVIEWER).values("image_id")
    by_image: dict[int, dict[int, str]] = defaultdict(dict)
    rows = (
        live_labels().filter(role=Annotation.Role.ANNOTATOR).exclude(image_id__in=reviewed)
        .order_by("created", "id").values_list("image_id", "user_id", "label")
    )
    for image_id, user_id, label in rows:
        by_image[image_id][user_id] = label  # a user's latest label counts
    return sorted(i for i, labels in by_image.items() if len(labels) >= 2 and len(set(labels.values())) > 1)


def agreement() -> dict:
    """Cohen's kappa for each pair of annotators on the images both labelled, and the
    label-by-label confusion of all such pairs ("" is "not an animal")."""
    from sklearn.metrics import cohen_kappa_score

    latest: dict[int, dict[str, str]] = defaultdict(dict)
    rows = (
        live_labels().filter(role=Annotation.Role.ANNOTATOR).order_by("created", "id")
        .values_list("image_id", "user__username", "label")
    )
    for image_id, username, label in rows:
        latest[image_id][username] = label or "(none)"
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    confusion: dict[tuple[str, str], int] = defaultdict(int)
    for labels in latest.values():
        users = sorted(labels)
        for i, a in enumerate(users):
            for b in users[i + 1:]:
                pairs[(a, b)].append((labels[a], labels[b]))
                confusion[tuple(sorted((labels[a], labels[b])))] += 1
    result = []
    for (a, b), items in sorted(pairs.items()):
        left, right = [x for x, _ in items], [y for _, y in items]
        agree = sum(x == y for x, y in items) / len(items)
        # kappa is undefined when both annotators used a single class throughout.
        kappa = float(cohen_kappa_score(left, right)) if len(set(left) | set(right)) > 1 else None
        result.append({"annotators": [a, b], "images": len(items), "agreement": round(agree, 4),
                       "kappa": round(kappa, 4) if kappa is not None else None})
    return {
        "pairs": result,
        "confusion": [{"labels": list(k), "images": n} for k, n in sorted(confusion.items(), key=lambda kv: -kv[1])],
        "disagreements_open": len(disagreements()),
    }
