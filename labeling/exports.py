"""Export of labels: the current labels as an ImageFolder zip or CSV, the full history as JSON."""

import csv
import io
import json
import zipfile
from pathlib import PurePosixPath

from django.core.files.storage import default_storage

from classifier.ml.class_map import OTHER
from classifier.models import Image

from . import selectors
from .models import Annotation


def _labelled(image_ids=None):
    """(image, winning ground-truth annotation) for every image with a label (of `image_ids`, when
    given: a selection from the data browser), oldest image first.

    An uploader's claim (feedback) is not a label: an image with only a claim is left out, and a
    claim made after a label does not replace it."""
    images = Image.objects.filter(annotations__isnull=False).distinct().order_by("id")
    if image_ids is not None:
        images = images.filter(id__in=list(image_ids))
    ids = list(images.values_list("id", flat=True))
    winners = {}
    for batch in selectors.batches(ids):
        winners.update(selectors.current_labels(batch, ground_truth=True))
    by_id = {}
    for batch in selectors.batches(sorted(winners)):
        by_id.update((i.id, i) for i in Image.objects.filter(id__in=batch))
    labelled, seen = [], set()
    for i in sorted(winners):
        if by_id[i].sha256 not in seen:  # a private copy (classifier.uploads): one file per content
            seen.add(by_id[i].sha256)
            labelled.append((by_id[i], winners[i]))
    return labelled


def _export_name(image: Image) -> str:
    return f"{image.sha256}{PurePosixPath(image.original.name).suffix}"


def _folder(label: str) -> str:
    """A class name as one safe zip folder: no separators, no "..", no control characters."""
    name = "".join("_" if c in "/\\" or ord(c) < 32 or c == "\x7f" else c for c in label).strip()
    name = name.lstrip(".") or "_"
    return name[:100]


def _path(image: Image, label: str) -> str:
    return f"{_folder(label)}/{_export_name(image)}"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    """A spreadsheet never reads a cell as a formula: those starting like one get a leading '."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _row(values: list[str]) -> list[str]:
    return [_cell(str(v)) for v in values]


def export_zip() -> bytes:
    """ImageFolder: one folder per ground-truth label ("other" for rejected), original bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for image, winner in _labelled():
            with default_storage.open(image.original.name, "rb") as f:
                archive.writestr(_path(image, winner.label or OTHER), f.read())
    return out.getvalue()


def export_csv(image_ids=None) -> str:
    """One row per labelled image (its path in the zip), then one per uploader claim: kind
    "feedback", no path (claims are not in the zip), so no reader can take one for a label.
    `image_ids`: only these images (a selection)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "label", "annotator", "time", "source", "role", "kind", "sha256"])
    for image, winner in _labelled(image_ids):
        writer.writerow(_row([
            _path(image, winner.label or OTHER), winner.label or OTHER,
            winner.user.username if winner.user else "", winner.created.isoformat(),
            winner.source or winner.role, winner.role, winner.kind, image.sha256,
        ]))
    claims = selectors.latest_feedback(image_ids)
    for _, claim in sorted(claims.items()):
        writer.writerow(_row(["", claim.label, claim.user.username if claim.user else "", claim.created.isoformat(),
                              claim.role, claim.role, claim.kind, claim.image.sha256]))
    return out.getvalue()


def export_history_json() -> str:
    """Every annotation ever made, in order, with provenance: nothing is left out."""
    rows = Annotation.objects.select_related("image", "user", "model_version").order_by("created", "id")
    history = [
        {
            "id": a.id, "image_sha256": a.image.sha256, "kind": a.kind, "role": a.role, "label": a.label,
            "user": a.user.username if a.user else None, "suggested_label": a.suggested_label,
            "model_version": a.model_version.name if a.model_version else None, "reverts": a.reverts_id,
            "time_taken_ms": a.time_taken_ms, "source": a.source, "created": a.created.isoformat(),
        }
        for a in rows
    ]
    return json.dumps({"version": 1, "annotations": history}, indent=1)
