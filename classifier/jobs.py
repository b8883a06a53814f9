"""Batch inference jobs: plan chunks, predict each chunk once, report progress.

job_create() stores the request and enqueues job_plan on commit; job_plan() freezes the list of
images (unpacking a zip first), cuts it into InferenceChunk rows and enqueues one task per
chunk, so every worker on the inference queue can take a share. chunk_run() claims its chunk
with a conditional UPDATE (a chunk delivered twice writes nothing twice), stamps a heartbeat
every INFERENCE_CHUNK_HEARTBEAT_S while it runs, predicts the images the job's version has not
predicted yet, and writes the predictions in bulk. A running chunk whose heartbeat is older than
INFERENCE_CHUNK_TIMEOUT_S, or whose worker process on this host is gone, belongs to a dead
worker: a redelivery takes it over, and chunks_retake() (the recovery loop) queues it again.

A promotion starts a job too (source "repredict"): the new champion predicts every image it
has not seen yet, and its chunks stop as soon as a newer champion has taken over. A changed
DEFAULT_BACKBONE (or backbone preprocessing) while a trained version serves on the old one starts
job_embed (source "embed"): the zero-shot version on the new backbone computes every image's
features and writes nothing else, so the next training run and its promotion find them stored.
"""

import logging
import time
import zipfile
from datetime import timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.module_loading import import_string

from . import enqueue, registry, selectors, serving, uploads
from .errors import Conflict, Rejected
from .heartbeat import beating, worker_gone, worker_name
from .models import Embedding, Image, InferenceChunk, InferenceJob, ModelVersion, Prediction
from .predictions import embeddings_write, predict_images, predictions_write

logger = logging.getLogger(__name__)
LOWEST_SHOWN = 20
CHUNK_TASK = "classifier.tasks.inference_chunk"


class JobRejected(Rejected):
    pass


def job_create(*, user, source: str, image_ids: list[int] | None = None, archive=None) -> InferenceJob:
    if source not in InferenceJob.REQUESTABLE:
        raise JobRejected(f"Unknown source {source!r}; choose one of: {', '.join(InferenceJob.REQUESTABLE)}")
    fields = {}
    if source == InferenceJob.Source.SELECTION:
        wanted = sorted({int(i) for i in image_ids or []})
        if not wanted:
            raise JobRejected("A selection job needs image_ids.")
        found = set(Image.objects.filter(id__in=wanted).values_list("id", flat=True))
        if missing := [i for i in wanted if i not in found]:
            raise JobRejected(f"No such images: {', '.join(map(str, missing[:20]))}")
        fields["image_ids"] = wanted
    elif source == InferenceJob.Source.ZIP:
        if archive is None or not uploads.is_zip(archive):
            raise JobRejected("A zip job needs a zip archive of photos.")
        fields["archive"] = default_storage.save(f"jobs/{timezone.now():%Y/%m/%d}/{archive.name}", archive)
        fields["filename"] = archive.name[:255]
    return _job_start(source=source, version=registry.serving_version(), user=user,
                      chunk_size=settings.INFERENCE_CHUNK_SIZE, **fields)


def job_repredict(*, version_id: int) -> InferenceJob | None:
    """After a promotion: the new champion predicts the images it has not seen yet."""
    version = ModelVersion.objects.filter(id=version_id, status=ModelVersion.Status.PRODUCTION).first()
    if version is None:
        return None  # a newer champion took over; its own job covers these images
    if not _unpredicted(version).exists():
        return None  # nothing to do: no empty job on the jobs page
    return _job_start(source=InferenceJob.Source.REPREDICT, version=version, user=None,
                      chunk_size=settings.REPREDICT_CHUNK_SIZE)


def job_embed() -> InferenceJob | None:
    """While a trained version serves on another backbone (or preprocessing) than DEFAULT_BACKBONE's:
    a job that stores the new backbone's features of every image not embedded yet (run_all starts it)."""
    current = selectors.production_model()
    if current is None or current.kind == "zero_shot" or current.embedding_key == settings.DEFAULT_BACKBONE:
        return None  # a zero-shot champion is replaced instead (registry.backbone_sync)
    version = registry.zero_shot_version_sync()  # made, not promoted: a trained version serves
    if not _unembedded(version).exists():
        return None
    if InferenceJob.objects.filter(source=InferenceJob.Source.EMBED, version=version).exclude(
            status__in=InferenceJob.FINISHED).exists():
        return None  # one is under way (a restart of run_all)
    return _job_start(source=InferenceJob.Source.EMBED, version=version, user=None,
                      chunk_size=settings.REPREDICT_CHUNK_SIZE)


def _unembedded(version: ModelVersion):
    return Image.objects.exclude(id__in=Embedding.objects.filter(backbone=version.embedding_key).values("image_id"))


def _job_start(*, source: str, version: ModelVersion, user, chunk_size: int, **fields) -> InferenceJob:
    with transaction.atomic():
        job = InferenceJob.objects.create(source=source, requested_by=user, version=version, chunk_size=chunk_size,
                                          **fields)
        enqueue.on_commit("classifier.tasks.inference_job_plan", job.id)
    return job


def unlabelled_image_ids() -> list[int]:
    labelled = set(import_string(settings.TRAINING_LABELS_SOURCE)())
    ids = Image.objects.exclude(status=Image.Status.PREDICTING).order_by("id").values_list("id", flat=True)
    return [i for i in ids if i not in labelled]


def _unpredicted(version: ModelVersion):
    return (Image.objects.exclude(predictions__model_version=version)
            .filter(status__in=[Image.Status.PREDICTED, Image.Status.QUEUED, Image.Status.FAILED]))


def job_plan(*, job_id: int) -> InferenceJob | None:
    """Freezes the job's images and queues its chunks; idempotent (claimed once)."""
    if not InferenceJob.objects.filter(id=job_id, status=InferenceJob.Status.QUEUED, cancel_requested=False).update(
            status=InferenceJob.Status.PREPARING, started=timezone.now()):
        return None
    job = InferenceJob.objects.get(id=job_id)
    try:
        if job.source == InferenceJob.Source.ZIP:
            ids = _unpack(job)
        elif job.source == InferenceJob.Source.UNLABELLED:
            ids = unlabelled_image_ids()
        elif job.source == InferenceJob.Source.REPREDICT:
            ids = list(_unpredicted(job.version).order_by("id").values_list("id", flat=True))
        elif job.source == InferenceJob.Source.EMBED:
            ids = list(_unembedded(job.version).order_by("id").values_list("id", flat=True))
        else:
            ids = list(job.image_ids)
    except zipfile.BadZipFile as e:
        return _finish(job, InferenceJob.Status.FAILED, error=f"The archive is not a readable zip: {e}")
    size = job.chunk_size
    with transaction.atomic():
        chunks = InferenceChunk.objects.bulk_create([
            InferenceChunk(job=job, index=n, image_ids=ids[start:start + size], size=len(ids[start:start + size]))
            for n, start in enumerate(range(0, len(ids), size))
        ], ignore_conflicts=True)
        InferenceJob.objects.filter(id=job.id).update(image_ids=ids, total=len(ids), status=InferenceJob.Status.RUNNING)
        for chunk_id in InferenceChunk.objects.filter(job=job).values_list("id", flat=True):
            enqueue.on_commit(CHUNK_TASK, chunk_id)
    job.refresh_from_db()
    if not chunks:
        return _finish(job, InferenceJob.Status.DONE)
    return job


def _unpack(job: InferenceJob) -> list[int]:
    ids, rejected = [], []
    with default_storage.open(job.archive.name, "rb") as f, zipfile.ZipFile(f) as archive:
        for path in uploads.zip_members(archive):
            member = uploads.zip_member_upload(archive, path, user=job.requested_by, classify=False)
            if member.upload is None:
                rejected.append({"path": path, "reason": member.reason})
            elif member.upload.image.id not in ids:
                ids.append(member.upload.image.id)
    InferenceJob.objects.filter(id=job.id).update(rejected=rejected)
    return ids


def job_cancel(*, job: InferenceJob) -> InferenceJob:
    """Chunks not yet started are skipped; the ones running finish their images."""
    updated = InferenceJob.objects.filter(id=job.id).exclude(status__in=InferenceJob.FINISHED).update(
        cancel_requested=True, status=InferenceJob.Status.CANCELLED)
    if not updated:
        job.refresh_from_db()
        raise Conflict(f"Job {job.id} has already finished ({job.status}).")
    job.refresh_from_db()
    _refresh_progress(job.id)
    return job


def _stale() -> Q:
    before = timezone.now() - timedelta(seconds=settings.INFERENCE_CHUNK_TIMEOUT_S)
    return Q(status=InferenceChunk.Status.RUNNING) & (
        Q(heartbeat__lt=before) | Q(heartbeat__isnull=True, claimed__lt=before))


def _claim(chunk_id: int) -> InferenceChunk | None:
    now = timezone.now()
    claimable = Q(status=InferenceChunk.Status.QUEUED) | _stale()
    current = InferenceChunk.objects.filter(id=chunk_id, status=InferenceChunk.Status.RUNNING).first()
    # This very process held it: its earlier attempt has ended (a retry after a database error).
    if current is not None and (current.worker == worker_name() or worker_gone(current.worker)):
        claimable |= Q(status=InferenceChunk.Status.RUNNING, worker=current.worker)
    if not InferenceChunk.objects.filter(claimable, id=chunk_id).update(
            status=InferenceChunk.Status.RUNNING, claimed=now, heartbeat=now, worker=worker_name()):
        return None
    return InferenceChunk.objects.select_related("job", "job__version").get(id=chunk_id)


def chunks_retake() -> list[int]:
    """Running chunks whose worker stopped beating go back to the queue, each once."""
    retaken = []
    for chunk_id in InferenceChunk.objects.filter(_stale()).values_list("id", flat=True):
        with transaction.atomic():
            if InferenceChunk.objects.filter(_stale(), id=chunk_id).update(status=InferenceChunk.Status.QUEUED,
                                                                          worker=""):
                enqueue.on_commit(CHUNK_TASK, chunk_id)
                retaken.append(chunk_id)
    if retaken:
        logger.warning("retook chunks %s: their workers stopped reporting", retaken)
    return retaken


def _superseded(job: InferenceJob) -> bool:
    return job.source == InferenceJob.Source.REPREDICT and job.version.status != ModelVersion.Status.PRODUCTION


def chunk_run(*, chunk_id: int) -> InferenceChunk | None:
    chunk = _claim(chunk_id)
    if chunk is None:
        return None
    job = chunk.job
    if job.cancel_requested or _superseded(job):
        InferenceChunk.objects.filter(id=chunk.id).update(status=InferenceChunk.Status.SKIPPED)
        _refresh_progress(job.id)
        return chunk
    started = time.perf_counter()
    embedding = job.source == InferenceJob.Source.EMBED
    done = set((Embedding.objects.filter(backbone=job.version.embedding_key) if embedding
                else Prediction.objects.filter(model_version=job.version))
               .filter(image_id__in=chunk.image_ids).values_list("image_id", flat=True))
    mine = InferenceChunk.objects.filter(id=chunk.id, status=InferenceChunk.Status.RUNNING, worker=chunk.worker)
    with beating(mine, every_s=settings.INFERENCE_CHUNK_HEARTBEAT_S):
        predicted = predict_images(job.version, [i for i in chunk.image_ids if i not in done],
                                   predictor=serving.get_predictor(job.version, side=embedding))
    if embedding:  # features only: the version does not serve, its predictions would show nowhere
        embeddings_write(version=job.version, predicted=predicted)
    else:
        predictions_write(version=job.version, predicted=predicted)
    InferenceChunk.objects.filter(id=chunk.id).update(
        status=InferenceChunk.Status.DONE, written=len(predicted.rows),
        failed={str(k): v for k, v in predicted.failed.items()},
        seconds=round(time.perf_counter() - started, 3), decode_seconds=round(predicted.stats.decode_seconds, 3),
        model_seconds=round(predicted.stats.model_seconds, 3))
    _refresh_progress(job.id)
    chunk.refresh_from_db()
    return chunk


def _refresh_progress(job_id: int) -> None:
    """Counts from the chunks (so a chunk run twice never counts twice); finishes the job
    when no chunk is left to run."""
    chunks = InferenceChunk.objects.filter(job_id=job_id)
    finished = chunks.filter(status__in=[InferenceChunk.Status.DONE, InferenceChunk.Status.SKIPPED])
    processed = finished.aggregate(n=Sum("size"))["n"] or 0
    failed = sum(len(f) for f in chunks.filter(status=InferenceChunk.Status.DONE).values_list("failed", flat=True))
    # Counts only grow: a worker whose read came before another's finish must not write its
    # older, smaller count over the newer one.
    InferenceJob.objects.filter(id=job_id).update(processed=Greatest("processed", Value(processed)),
                                                  failed_images=Greatest("failed_images", Value(failed)))
    if not chunks.filter(status__in=[InferenceChunk.Status.QUEUED, InferenceChunk.Status.RUNNING]).exists():
        job = InferenceJob.objects.get(id=job_id)
        if job.cancel_requested:
            _finish(job, InferenceJob.Status.CANCELLED, only_unfinished=False)
        elif job.status == InferenceJob.Status.RUNNING:
            _finish(job, InferenceJob.Status.DONE)


def _finish(job: InferenceJob, status: str, *, error: str = "", only_unfinished: bool = True) -> InferenceJob:
    jobs = InferenceJob.objects.filter(id=job.id)
    if only_unfinished:
        jobs = jobs.exclude(status__in=InferenceJob.FINISHED)
    jobs.update(status=status, error=error, finished=job.finished or timezone.now(), summary=job_summary(job))
    job.refresh_from_db()
    return job


def job_summary(job: InferenceJob) -> dict:
    """Counts per predicted class, and the images the model was least sure of (to review)."""
    predictions = Prediction.objects.filter(model_version=job.version, image_id__in=job.image_ids)
    counts: dict[str, int] = {}
    for label in predictions.values_list("label", flat=True):
        counts[label] = counts.get(label, 0) + 1
    lowest = list(predictions.order_by("confidence", "id").values("image_id", "label", "confidence")[:LOWEST_SHOWN])
    return {"per_class": dict(sorted(counts.items(), key=lambda kv: -kv[1])), "lowest_confidence": lowest}


def job_progress(job: InferenceJob) -> dict:
    """Throughput and ETA from the images done since the job started."""
    elapsed = ((job.finished or timezone.now()) - job.started).total_seconds() if job.started else 0.0
    rate = job.processed / elapsed if elapsed > 0 else 0.0
    left = max(job.total - job.processed, 0)
    eta = left / rate if rate > 0 and job.status == InferenceJob.Status.RUNNING else None
    return {"percent": job.percent, "images_per_s": round(rate, 2), "elapsed_s": round(elapsed, 1),
            "eta_s": round(eta, 1) if eta is not None else None}
