"""A batch job's chunks are shared by two real worker processes."""

import pytest

from classifier import jobs
from classifier.models import InferenceChunk, Prediction
from tests.helpers import demo_photo, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_two_workers_share_the_chunks_of_a_job(settings, worker_factory, species, alice):
    from classifier import uploads

    first = worker_factory({"TORCH_NUM_THREADS": "1", "RETRAIN_AFTER_LABELS": "0"})
    worker_factory({"TORCH_NUM_THREADS": "1", "RETRAIN_AFTER_LABELS": "0"}, queues=first.queues)
    settings.INFERENCE_CHUNK_SIZE = 3
    images = [uploads.image_upload(user=alice, filename=p.name, data=p.read_bytes(), classify=False).image
              for name in ("dalmatian", "flamingo", "starfish", "llama")
              for p in sorted(demo_photo(name).parent.glob("*.jpg"))[:3]]

    job = jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in images])
    job = wait_for(lambda: type(job).objects.filter(id=job.id, status="done").first(), timeout=180,
                   what="the job to finish")

    assert job.processed == 12 and job.failed_images == 0
    chunks = InferenceChunk.objects.filter(job=job)
    assert chunks.count() == 4 and set(chunks.values_list("status", flat=True)) == {"done"}
    workers = set(chunks.values_list("worker", flat=True))
    assert len(workers) == 2, workers  # both processes took chunks
    assert Prediction.objects.filter(model_version=species, image__in=images).count() == 12
