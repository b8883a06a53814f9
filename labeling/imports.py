"""Import of labelled photos: a zip in ImageFolder layout (class/photo.jpg) becomes images and
imported labels, in a worker, with progress and a report of every rejected file."""

import logging
import zipfile
from pathlib import PurePosixPath

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from classifier import enqueue, registry, uploads
from classifier.errors import Rejected
from classifier.ml.class_map import OTHER
from classifier.models import Species

from .label_errors import import_source
from .models import Annotation, ImportJob
from .retrain import retrain_if_due

logger = logging.getLogger(__name__)
PROGRESS_EVERY = 10


class ImportRejected(Rejected):
    pass


def import_start(*, user, file) -> ImportJob:
    """Store the archive and queue its import; a non-zip is refused before anything is stored."""
    if file.size > settings.IMPORT_MAX_BYTES:
        raise ImportRejected(f"The archive is {file.size:,} bytes; the limit is {settings.IMPORT_MAX_BYTES:,} "
                             "(IMPORT_MAX_BYTES). Split it into several zips.")
    if not uploads.is_zip(file):
        raise ImportRejected("The file is not a zip archive (ImageFolder layout: class/photo.jpg).")
    name = default_storage.save(f"imports/{timezone.now():%Y/%m/%d}/{file.name}", file)
    with transaction.atomic():
        job = ImportJob.objects.create(user=user, archive=name, filename=file.name[:255])
        enqueue.on_commit("labeling.tasks.import_run", job.id)
    return job


def _entries(archive: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(path in the zip, class name) for every file that sits in a class folder."""
    # A file at the top level has no class folder.
    return [(name, PurePosixPath(name).parts[-2]) for name in uploads.zip_members(archive)
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
            job.total = len(entries)
            job.save(update_fields=["total"])
            stored = []
            for n, (path, label) in enumerate(entries, start=1):
                stored += _store_one(job, archive, path, label.strip().lower())
                if n % PROGRESS_EVERY == 0 or n == len(entries):
                    job.processed = n
                    job.save(update_fields=["processed", "created_images", "existing_images", "rejected"])
        _label_stored(job, stored)
    except zipfile.BadZipFile as e:
        return _fail(job, f"The archive is not a readable zip: {e}")
    except Exception as e:
        _fail(job, f"{type(e).__name__}: {e}")
        raise
    job.status = ImportJob.Status.DONE
    job.finished = timezone.now()
    job.save(update_fields=["status", "finished"])
    _archive_delete(job)
    retrain_if_due()  # imported labels count towards the next retrain
    return job


def _label_problem(label: str) -> str:
    limit = Species._meta.get_field("name").max_length
    if len(label) > limit:
        return f"the class folder name has {len(label)} characters; the limit is {limit}"
    return ""


def _store_one(job, archive, path, label) -> list:
    """Store one member; [(path, label, image)] when stored, [] (and a reason in the job) when not."""
    problem = _label_problem(label)
    member = None if problem else uploads.zip_member_upload(archive, path, user=job.user)
    if member is None or member.upload is None:
        job.rejected.append({"path": path, "reason": problem or member.reason})
        return []
    if member.upload.created:
        job.created_images += 1
    else:
        job.existing_images += 1
    return [(path, label, member.upload.image)]


@transaction.atomic
def _label_stored(job, stored: list) -> None:
    """Classes only for labels of images that were stored, then one imported label per image."""
    labels = sorted({label for _, label, _ in stored} - {OTHER, ""})
    new = [name for name in labels if not Species.objects.filter(name=name).exists()]
    if new:  # one new zero-shot version for all of them, none when nothing is new
        registry.species_create_many(names=new)
    species = {s.name: s for s in Species.objects.filter(name__in=labels)}
    for path, label, image in stored:
        target = species.get(label)
        kind = Annotation.Kind.IMPORTED if target else Annotation.Kind.REJECTED
        Annotation.objects.create(
            image=image, kind=kind, role=Annotation.Role.IMPORT, species=target,
            label=target.name if target else "", user=job.user, source=f"{import_source(job.id)}{path}"[:255],
        )


def _archive_delete(job) -> None:
    """The uploaded zip is kept only while its import runs."""
    try:
        default_storage.delete(job.archive.name)
    except OSError:
        logger.warning("import %s: could not delete %s", job.id, job.archive.name, exc_info=True)


def _fail(job, error: str) -> None:
    logger.warning("import %s failed: %s", job.id, error)
    job.status = ImportJob.Status.FAILED
    job.error = error
    job.finished = timezone.now()
    job.save(update_fields=["status", "error", "finished"])
    _archive_delete(job)
