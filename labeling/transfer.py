"""Import and export of labels: ImageFolder zips in, ImageFolder zip / CSV / JSON history out."""

import csv
import io
import json
import logging
import zipfile
from pathlib import PurePosixPath

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from classifier import archives
from classifier import services as classifier_services
from classifier.ml.class_map import OTHER
from classifier.models import Image, Species

from . import selectors
from .models import Annotation, ImportJob

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 10


class ImportRejected(ValueError):
    pass


def import_start(*, user, file) -> ImportJob:
    """Store the archive and queue its import; a non-zip is refused before anything is stored."""
    if not archives.is_zip(file):
        raise ImportRejected("The file is not a zip archive (ImageFolder layout: class/photo.jpg).")
    name = default_storage.save(f"imports/{timezone.now():%Y/%m/%d}/{file.name}", file)
    with transaction.atomic():
        job = ImportJob.objects.create(user=user, archive=name, filename=file.name[:255])
        transaction.on_commit(lambda: _enqueue(job.id))
    return job


def _enqueue(job_id: int) -> None:
    from .tasks import import_run

    import_run.delay(job_id)


def _entries(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(path in the zip, class name) for every file that sits in a class folder."""
    # A file at the top level has no class folder.
    return [(name, PurePosixPath(name).parts[-2]) for name in archives.members(archive)
            if len(PurePosixPath(name).parts) >= 2]


def import_run(*, job_id: int) -> ImportJob | None:
    # Claim by conditional UPDATE: a task delivered twice imports once.
    if not ImportJob.objects.filter(id=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started=timezone.now()
    ):
        return None
    job = ImportJob.objects.get(id=job_id)
    try:
        with default_storage.open(job.archive.name, "rb") as f, zipfile.ZipFile(f) as archive:
            entries = _entries(archive)
            labels = sorted({label.strip().lower() for _, label in entries} - {OTHER, ""})
            classifier_services.species_create_many(names=labels)
            species = {s.name: s for s in Species.objects.filter(name__in=labels)}
            job.total = len(entries)
            job.save(update_fields=["total"])
            for n, (path, label) in enumerate(entries, start=1):
                _import_one(job, archive, path, label.strip().lower(), species)
                if n % PROGRESS_EVERY == 0 or n == len(entries):
                    job.processed = n
                    job.save(update_fields=["processed", "created_images", "existing_images", "rejected"])
    except zipfile.BadZipFile as e:
        return _fail(job, f"The archive is not a readable zip: {e}")
    except Exception as e:
        _fail(job, f"{type(e).__name__}: {e}")
        raise
    job.status = ImportJob.Status.DONE
    job.finished = timezone.now()
    job.save(update_fields=["status", "finished"])
    from .services import retrain_if_due  # imported labels count towards the next retrain

    retrain_if_due()
    return job


def _import_one(job, archive, path, label, species) -> None:
    member = archives.member_upload(archive, path, user=job.user)
    if member.upload is None:
        job.rejected.append({"path": path, "reason": member.reason})
        return
    result = member.upload
    if result.created:
        job.created_images += 1
    else:
        job.existing_images += 1
    target = species.get(label)
    if label == OTHER or target is None:
        kind, target = Annotation.Kind.REJECTED, None
    else:
        kind = Annotation.Kind.IMPORTED
    Annotation.objects.create(
        image=result.image, kind=kind, role=Annotation.Role.IMPORT, species=target,
        label=target.name if target else "", user=job.user, source=f"import {job.id}: {path}"[:255],
    )


def _fail(job, error: str) -> None:
    logger.warning("import %s failed: %s", job.id, error)
    job.status = ImportJob.Status.FAILED
    job.error = error
    job.finished = timezone.now()
    job.save(update_fields=["status", "error", "finished"])


# --- export ----------------------------------------------------------------------------------

def _labelled():
    """(image, winning annotation) for every image with a current label, oldest image first."""
    images = Image.objects.filter(annotations__isnull=False).distinct().order_by("id")
    winners = selectors.current_labels(images.values_list("id", flat=True))
    by_id = {i.id: i for i in images.filter(id__in=list(winners))}
    return [(by_id[i], winners[i]) for i in sorted(winners)]


def _export_name(image: Image) -> str:
    return f"{image.sha256}{PurePosixPath(image.original.name).suffix}"


def export_zip() -> bytes:
    """ImageFolder: one folder per current label ("other" for rejected), original bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for image, winner in _labelled():
            with default_storage.open(image.original.name, "rb") as f:
                archive.writestr(f"{winner.label or OTHER}/{_export_name(image)}", f.read())
    return out.getvalue()


def export_csv() -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "label", "annotator", "time", "source", "role", "kind", "sha256"])
    for image, winner in _labelled():
        writer.writerow([
            f"{winner.label or OTHER}/{_export_name(image)}", winner.label or OTHER,
            winner.user.username if winner.user else "", winner.created.isoformat(),
            winner.source or winner.role, winner.role, winner.kind, image.sha256,
        ])
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
