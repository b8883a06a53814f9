"""A change of DEFAULT_BACKBONE: the zero-shot version on the new backbone takes over, and its
re-predict job (chunks, progress) stores every image's embedding for the new backbone."""

import numpy as np
import pytest

from classifier import jobs, registry, selectors
from classifier.ml.backbones import get_spec
from classifier.models import Embedding, InferenceChunk, InferenceJob, ModelVersion
from tests.helpers import demo_photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def predicted(species, alice, settings):
    """Two photos predicted (and embedded) by the zero-shot version on the first backbone."""
    from classifier import uploads

    settings.TORCH_NUM_THREADS = 1
    images = [uploads.image_upload(user=alice, filename=f"{name}.jpg", data=demo_photo(name).read_bytes(),
                                   classify=False).image for name in ("starfish", "flamingo")]
    job = jobs.job_create(user=alice, source="selection", image_ids=[i.id for i in images])
    jobs.job_plan(job_id=job.id)
    for chunk in InferenceChunk.objects.filter(job=job):
        jobs.chunk_run(chunk_id=chunk.id)
    return images


def test_a_new_default_backbone_re_embeds_every_image_in_a_job(predicted, species, settings,
                                                               django_capture_on_commit_callbacks):
    first = settings.DEFAULT_BACKBONE
    assert Embedding.objects.filter(backbone=first).count() == 2
    settings.DEFAULT_BACKBONE = "efficientnet_lite1"

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        version = registry.backbone_sync()
    assert callbacks  # the promotion queues the re-predict job
    job = jobs.job_repredict(version_id=version.id)
    jobs.job_plan(job_id=job.id)
    for chunk in InferenceChunk.objects.filter(job=job):
        jobs.chunk_run(chunk_id=chunk.id)
    job.refresh_from_db()

    assert selectors.production_model() == version and version.backbone == "efficientnet_lite1"
    assert job.source == InferenceJob.Source.REPREDICT and job.status == "done"
    assert job.total == job.processed == 2 and job.percent == 100
    stored = Embedding.objects.filter(backbone="efficientnet_lite1", image__in=predicted)
    assert stored.count() == 2
    assert all(len(np.frombuffer(e.vector, "<f4")) == e.dim == get_spec("efficientnet_lite1").feature_dim
               for e in stored)
    assert registry.backbone_sync() == version  # nothing more to do


def test_a_trained_version_keeps_serving_on_its_own_backbone(species, settings):
    ModelVersion.objects.filter(id=species.id).update(kind="head")
    settings.DEFAULT_BACKBONE = "efficientnet_lite2"

    assert registry.backbone_sync() == species
    assert selectors.production_model() == species
    assert not ModelVersion.objects.filter(backbone="efficientnet_lite2").exists()
