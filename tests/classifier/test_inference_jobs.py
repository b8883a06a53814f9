"""Batch inference jobs through the services: chunks, idempotence, cancel, zips with broken files,
and head-only versions that re-score stored features without the backbone."""

import io
import zipfile

import numpy as np
import pytest

from classifier import jobs, predictions, registry, serving, uploads
from classifier.errors import Conflict
from classifier.ml import backbones
from classifier.ml.cards import ModelCard
from classifier.ml.images import decode_image
from classifier.ml.ort import OrtPredictor
from classifier.ml.predict import Predictor
from classifier.models import Embedding, Image, InferenceChunk, InferenceJob, Prediction, Species, TrainingRun
from classifier.training import runs
from labeling.models import Annotation
from tests.helpers import DATASET, demo_photo
from tests.labeling.factories import annotate

pytestmark = pytest.mark.django_db


@pytest.fixture
def photos(species, alice, settings):
    from classifier import uploads

    settings.TORCH_NUM_THREADS = 1
    images = []
    for name in ("dalmatian", "flamingo", "starfish"):
        for path in sorted(demo_photo(name).parent.glob("*.jpg"))[:2]:
            images.append(uploads.image_upload(user=alice, filename=path.name, data=path.read_bytes(),
                                                classify=False).image)
    return images


def run_all(job: InferenceJob) -> InferenceJob:
    jobs.job_plan(job_id=job.id)
    for chunk in InferenceChunk.objects.filter(job=job):
        jobs.chunk_run(chunk_id=chunk.id)
    job.refresh_from_db()
    return job


def test_a_selection_job_predicts_every_image_in_chunks(photos, species, alice, settings):
    settings.INFERENCE_CHUNK_SIZE = 4
    job = jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in photos])

    job = run_all(job)

    assert job.status == "done" and job.total == 6 and job.processed == 6 and job.failed_images == 0
    assert InferenceChunk.objects.filter(job=job).count() == 2
    predictions = Prediction.objects.filter(model_version=species, image__in=photos)
    assert predictions.count() == 6
    assert {p.image.sha256: p.label for p in predictions}[photos[0].sha256] == "dalmatian"
    assert set(predictions.values_list("backend", flat=True)) == {"onnxruntime-cpu"}
    assert not Image.objects.filter(id__in=[i.id for i in photos]).exclude(status="predicted").exists()
    assert sum(job.summary["per_class"].values()) == 6
    assert len(job.summary["lowest_confidence"]) == 6
    chunk = InferenceChunk.objects.filter(job=job).first()
    assert chunk.decode_seconds > 0 and chunk.model_seconds > 0


def test_a_chunk_delivered_twice_writes_nothing_twice(photos, species, alice):
    job = jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in photos])
    jobs.job_plan(job_id=job.id)
    assert jobs.job_plan(job_id=job.id) is None  # the plan, too, is made once
    chunk = InferenceChunk.objects.get(job=job)
    assert jobs.chunk_run(chunk_id=chunk.id).written == 6
    assert jobs.chunk_run(chunk_id=chunk.id) is None
    # Even a chunk taken over from a "dead" worker finds the predictions and writes none.
    InferenceChunk.objects.filter(id=chunk.id).update(status="queued")
    assert jobs.chunk_run(chunk_id=chunk.id).written == 0
    assert Prediction.objects.filter(model_version=species).count() == 6
    job.refresh_from_db()
    assert job.processed == 6


def test_a_cancelled_job_skips_the_chunks_not_started(photos, alice, settings):
    settings.INFERENCE_CHUNK_SIZE = 2
    job = jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in photos])
    jobs.job_plan(job_id=job.id)
    first, *rest = InferenceChunk.objects.filter(job=job)
    jobs.chunk_run(chunk_id=first.id)
    jobs.job_cancel(job=job)
    for chunk in rest:
        jobs.chunk_run(chunk_id=chunk.id)

    job.refresh_from_db()
    assert job.status == "cancelled"
    statuses = list(InferenceChunk.objects.filter(job=job).values_list("status", flat=True))
    assert statuses == ["done", "skipped", "skipped"]
    assert Prediction.objects.count() == 2
    with pytest.raises(Conflict, match="already finished"):
        jobs.job_cancel(job=job)


class Upload(io.BytesIO):
    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name
        self.size = len(data)


def test_a_zip_with_broken_files_reports_them_and_predicts_the_rest(species, alice):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/dalmatian.jpg", demo_photo("dalmatian").read_bytes())
        archive.writestr("flamingo.jpg", demo_photo("flamingo").read_bytes())
        archive.writestr("broken.jpg", demo_photo("flamingo").read_bytes()[:300])
        archive.writestr("notes.txt", b"not a photo")
        archive.writestr("empty.png", b"")
    job = jobs.job_create(user=alice, source="zip", archive=Upload(buffer.getvalue(), "batch.zip"))

    job = run_all(job)

    assert job.status == "done" and job.total == 2
    assert sorted(r["path"] for r in job.rejected) == ["broken.jpg", "empty.png", "notes.txt"]
    assert all(r["reason"] for r in job.rejected)
    assert sorted(Prediction.objects.filter(model_version=species).values_list("label", flat=True)) == [
        "dalmatian", "flamingo"]


def test_it_refuses_bad_requests_with_a_reason(species, alice):
    with pytest.raises(jobs.JobRejected, match="needs image_ids"):
        jobs.job_create(user=alice, source="selection", image_ids=[])
    with pytest.raises(jobs.JobRejected, match="No such images: 999"):
        jobs.job_create(user=alice, source="selection", image_ids=[999])
    with pytest.raises(jobs.JobRejected, match="zip archive"):
        jobs.job_create(user=alice, source="zip", archive=Upload(b"hello", "x.zip"))


def test_a_head_only_version_rescores_stored_features_without_the_backbone(
        models_root, label_images, alice, monkeypatch):
    images = label_images({"cat": 15, "dog": 15, "llama": 15})
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    version = runs.training_execute(run_id=run.id).version
    assert version.status == "production"
    serving.get_predictor(version)  # loaded (backbone included) before the trap is set

    def no_backbone(self, *args, **kwargs):
        raise AssertionError("the backbone ran")

    monkeypatch.setattr(backbones.Backbone, "forward", no_backbone)
    monkeypatch.setattr(OrtPredictor, "run", no_backbone)  # the exported graph holds the backbone too
    job = run_all(jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in images]))

    assert job.status == "done" and job.failed_images == 0
    predictions = Prediction.objects.filter(model_version=version)
    assert predictions.count() == 45
    assert set(predictions.values_list("backend", flat=True)) == {"torch-cpu (stored features)"}


def test_a_flip_averaged_head_still_stores_each_images_plain_features(models_root, alice, settings, species):
    # Features of the image alone (no mirror), as under the zero-shot version: similarity,
    # near-duplicates and head retrains compare like with like after such a head is promoted.
    settings.TRAINING_HEAD_TTA = True
    for name in ("beaver", "dolphin", "emu"):
        registry.species_create(name=name)
        for path in sorted((DATASET / name).glob("*.jpg"))[:8]:
            image = uploads.image_upload(user=alice, filename=path.name, data=path.read_bytes(), classify=False).image
            annotate(image=image, kind=Annotation.Kind.IMPORTED, role=Annotation.Role.IMPORT,
                     species=Species.objects.get(name=name))
    run = runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL)
    version = registry.model_promote(version=runs.training_execute(run_id=run.id).version, reason="test")
    assert version.card["tta"]

    photo = demo_photo("dalmatian").read_bytes()
    image = uploads.image_upload(user=alice, filename="dalmatian.jpg", data=photo, classify=False).image
    predictions.image_classify(image_id=image.id)

    stored = Embedding.objects.get(image=image, backbone=version.backbone)
    plain = Predictor(ModelCard.from_dict(species.card)).predict([decode_image(photo).image])[0].embedding
    assert np.abs(np.frombuffer(bytes(stored.vector), dtype="<f4") - plain).max() < 1e-3
