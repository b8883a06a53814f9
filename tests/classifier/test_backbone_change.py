"""A change of DEFAULT_BACKBONE: the zero-shot version on the new backbone takes over, and its
re-predict job (chunks, progress) stores every image's embedding for the new backbone."""

import numpy as np
import pytest

from classifier import jobs, registry, selectors, serving
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
    assert version.events.latest("id").reason.startswith("zero-shot: the backbone is now efficientnet_lite1")
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


@pytest.fixture
def old_crop(species):
    """The production zero-shot version as made before the Lite specs kept the whole short side."""
    card = dict(species.card, preprocessing=dict(species.card["preprocessing"], resize_size=256))
    ModelVersion.objects.filter(id=species.id).update(card=card, card_sha256="0" * 64)
    species.refresh_from_db()
    return species


def test_a_zero_shot_version_on_an_older_preprocessing_is_replaced_and_old_features_stay_apart(
        old_crop, predicted, settings, django_capture_on_commit_callbacks):
    backbone = settings.DEFAULT_BACKBONE
    assert old_crop.embedding_key == f"{backbone}@256-224"
    assert Embedding.objects.filter(backbone=f"{backbone}@256-224").count() == 2
    assert not Embedding.objects.filter(backbone=backbone).exists()

    with django_capture_on_commit_callbacks(execute=False):
        version = registry.backbone_sync()
    job = jobs.job_repredict(version_id=version.id)
    jobs.job_plan(job_id=job.id)
    for chunk in InferenceChunk.objects.filter(job=job):
        jobs.chunk_run(chunk_id=chunk.id)

    assert version != old_crop and selectors.production_model() == version
    assert version.card["preprocessing"]["resize_size"] == get_spec(backbone).preprocessing.resize_size
    assert version.embedding_key == backbone
    # Re-predicted under the new crop, from pixels: the old rows are neither re-scored nor mixed in.
    assert Embedding.objects.filter(backbone=backbone, image__in=predicted).count() == 2
    assert Embedding.objects.filter(backbone=f"{backbone}@256-224").count() == 2
    assert registry.backbone_sync() == version


def test_under_a_trained_version_a_job_stores_the_new_backbones_features_and_nothing_else(
        predicted, species, settings, django_capture_on_commit_callbacks):
    ModelVersion.objects.filter(id=species.id).update(kind="head")
    settings.DEFAULT_BACKBONE = "efficientnet_lite1"
    assert registry.backbone_sync() == species

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = jobs.job_embed()
    assert callbacks and job.source == InferenceJob.Source.EMBED
    serving_now = serving.get_predictor(species)
    jobs.job_plan(job_id=job.id)
    for chunk in InferenceChunk.objects.filter(job=job):
        jobs.chunk_run(chunk_id=chunk.id)
    job.refresh_from_db()

    assert serving.get_predictor(species) is serving_now  # the job's chunks did not evict it

    assert job.status == "done" and job.total == job.processed == 2
    assert selectors.production_model() == species  # the trained version keeps serving
    assert job.version.backbone == "efficientnet_lite1" and job.version.status != ModelVersion.Status.PRODUCTION
    stored = Embedding.objects.filter(backbone="efficientnet_lite1", image__in=predicted)
    assert stored.count() == 2 and all(e.dim == 1280 for e in stored)
    assert not job.version.predictions.exists()  # features only: nothing shows a non-serving version's labels
    assert jobs.job_embed() is None  # every image has them now


def test_no_embed_job_while_the_champion_is_on_the_default_backbone(predicted, species):
    ModelVersion.objects.filter(id=species.id).update(kind="head")
    assert jobs.job_embed() is None
