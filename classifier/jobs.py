"""Writes for batch inference jobs: plan chunks, predict each chunk once, report progress.

job_create() stores the request and enqueues job_plan on commit; job_plan() freezes the list of
images (unpacking a zip first), cuts it into InferenceChunk rows and enqueues one task per
chunk, so every worker on the inference queue can take a share. chunk_run() claims its chunk
with a conditional UPDATE (a chunk delivered twice writes nothing twice; a claim older than
INFERENCE_CHUNK_TIMEOUT_S belongs to a dead worker and is taken over), predicts the images
the job's version has not predicted yet, and writes the predictions in bulk.
"""

import logging
import os
import socket
import time
import zipfile
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q, Sum, Value
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.module_loading import import_string

from . import archives, selectors, serving
from .ml.batch import BatchStats, predict_stream
from .models import Embedding, Image, InferenceChunk, InferenceJob, Prediction

logger = logging.getLogger(__name__)
LOWEST_SHOWN = 20


class JobRejected(ValueError):
    pass


def job_create(*, user, source: str, image_ids: list[int] | None = None, archive=None) -> InferenceJob:
    from .services import zero_shot_version_sync

    if source not in InferenceJob.Source.values:
        raise JobRejected(f"Unknown source {source!r}; choose one of: {', '.join(InferenceJob.Source.values)}")
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
        if archive is None or not archives.is_zip(archive):
            raise JobRejected("A zip job needs a zip archive of photos.")
        fields["archive"] = default_storage.save(f"jobs/{timezone.now():%Y/%m/%d}/{archive.name}", archive)
        fields["filename"] = archive.name[:255]
    version = selectors.production_model() or zero_shot_version_sync()
    with transaction.atomic():
        job = InferenceJob.objects.create(source=source, requested_by=user, version=version,
                                          chunk_size=settings.INFERENCE_CHUNK_SIZE, **fields)
        transaction.on_commit(lambda: _enqueue_plan(job.id))
    return job


def _enqueue_plan(job_id: int) -> None:
    from .tasks import inference_job_plan

    inference_job_plan.delay(job_id)


def unlabelled_image_ids() -> list[int]:
    labelled = set(import_string(settings.TRAINING_LABELS_SOURCE)())
    ids = Image.objects.exclude(status=Image.Status.PREDICTING).order_by("id").values_list("id", flat=True)
    return [i for i in ids if i not in labelled]


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
        chunk_ids = list(InferenceChunk.objects.filter(job=job).values_list("id", flat=True))
        transaction.on_commit(lambda: _enqueue_chunks(chunk_ids))
    job.refresh_from_db()
    if not chunks:
        return _finish(job, InferenceJob.Status.DONE)
    return job


def _enqueue_chunks(chunk_ids: list[int]) -> None:
    from .tasks import inference_chunk

    for chunk_id in chunk_ids:
        inference_chunk.delay(chunk_id)


def _unpack(job: InferenceJob) -> list[int]:
    ids, rejected = [], []
    with default_storage.open(job.archive.name, "rb") as f, zipfile.ZipFile(f) as archive:
        for path in archives.members(archive):
            member = archives.member_upload(archive, path, user=job.requested_by, classify=False)
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
        raise JobRejected(f"Job {job.id} has already finished ({job.status}).")
    job.refresh_from_db()
    _refresh_progress(job.id)
    return job


def _claim(chunk_id: int) -> InferenceChunk | None:
    now = timezone.now()
    stale = now - timedelta(seconds=settings.INFERENCE_CHUNK_TIMEOUT_S)
    claimable = Q(status=InferenceChunk.Status.QUEUED) | Q(status=InferenceChunk.Status.RUNNING, claimed__lt=stale)
    if not InferenceChunk.objects.filter(claimable, id=chunk_id).update(
            status=InferenceChunk.Status.RUNNING, claimed=now, worker=f"{socket.gethostname()}:{os.getpid()}"):
        return None
    return InferenceChunk.objects.select_related("job", "job__version").get(id=chunk_id)


def chunk_run(*, chunk_id: int) -> InferenceChunk | None:
    chunk = _claim(chunk_id)
    if chunk is None:
        return None
    job = chunk.job
    if job.cancel_requested:
        InferenceChunk.objects.filter(id=chunk.id).update(status=InferenceChunk.Status.SKIPPED)
        _refresh_progress(job.id)
        return chunk
    started = time.perf_counter()
    version = job.version
    done = set(Prediction.objects.filter(model_version=version, image_id__in=chunk.image_ids)
               .values_list("image_id", flat=True))
    todo = [i for i in chunk.image_ids if i not in done]
    predictor = serving.get_predictor(version)
    rows, embeddings, failed = [], [], {}
    stats = BatchStats()
    if todo and serving.rescores_embeddings(predictor.card):
        stored = dict(Embedding.objects.filter(image_id__in=todo, backbone=version.backbone)
                      .values_list("image_id", "vector"))
        if stored:
            keys = list(stored)
            vectors = np.stack([np.frombuffer(bytes(stored[k]), dtype="<f4") for k in keys])
            model_started = time.perf_counter()
            results = predictor.predict_embeddings(vectors, top_k=settings.PREDICTION_TOP_K)
            stats.model_seconds += time.perf_counter() - model_started
            rows += [(k, r, f"{predictor.embeddings_backend} (stored features)") for k, r in zip(keys, results)]
            todo = [i for i in todo if i not in stored]
    if todo:
        names = dict(Image.objects.filter(id__in=todo).values_list("id", "original"))
        items = [(i, _loader(names[i])) for i in todo if i in names]
        for image_id, result, error in predict_stream(
                predictor, items, batch_size=settings.INFERENCE_BATCH_SIZE, threads=settings.INFERENCE_DECODE_THREADS,
                top_k=settings.PREDICTION_TOP_K, max_pixels=settings.UPLOAD_MAX_PIXELS, stats=stats):
            if result is None:
                failed[image_id] = error
            else:
                rows.append((image_id, result, predictor.backend))
                embeddings.append((image_id, result.embedding))
    _write(version, rows, embeddings if not predictor.card.tta else [], failed)
    InferenceChunk.objects.filter(id=chunk.id).update(
        status=InferenceChunk.Status.DONE, written=len(rows), failed={str(k): v for k, v in failed.items()},
        seconds=round(time.perf_counter() - started, 3), decode_seconds=round(stats.decode_seconds, 3),
        model_seconds=round(stats.model_seconds, 3))
    _refresh_progress(job.id)
    chunk.refresh_from_db()
    return chunk


def _loader(name: str):
    def load() -> bytes:
        with default_storage.open(name, "rb") as f:
            return f.read()
    return load


@transaction.atomic
def _write(version, rows, embeddings, failed) -> None:
    now = timezone.now()
    Prediction.objects.bulk_create([
        Prediction(image_id=image_id, model_version=version, label=r.label, confidence=r.confidence,
                   top=[{"label": s.label, "p": round(s.p, 6)} for s in r.top],
                   probabilities=[round(p, 6) for p in r.probabilities], backend=backend,
                   model_ms=round(r.duration_ms, 3), latency_ms=round(r.duration_ms, 3), created=now)
        for image_id, r, backend in rows
    ], ignore_conflicts=True)  # a re-delivered chunk, or a single-image task that got there first
    Embedding.objects.bulk_create([
        Embedding(image_id=image_id, backbone=version.backbone, dim=int(v.size), vector=np.asarray(v, "<f4").tobytes())
        for image_id, v in embeddings
    ], ignore_conflicts=True)
    Image.objects.filter(id__in=[image_id for image_id, _, _ in rows]).exclude(
        status=Image.Status.PREDICTED).update(status=Image.Status.PREDICTED, status_changed=now, error="")
    for image_id, error in failed.items():
        Image.objects.filter(id=image_id).exclude(status=Image.Status.PREDICTED).update(
            status=Image.Status.FAILED, status_changed=now, error=error)


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
