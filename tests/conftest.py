"""Shared fixtures: named users, a media folder, real photos and a real Celery worker.

The suite runs against whatever DATABASE_URL and CELERY_BROKER_URL say (PostgreSQL and
Redis in CI), and against the embedded default (SQLite file, filesystem broker) when unset.
"""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from animalsite import processes
from tests.helpers import demo_photo, worker_database_url


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(autouse=True)
def _media_root(settings, media_dir):
    settings.MEDIA_ROOT = str(media_dir)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(autouse=True)
def _onnx_dir(settings, onnx_dir):
    # Exports are named by the card's hash: one per card for the whole run, in this process and its workers.
    settings.ONNX_DIR = onnx_dir


@pytest.fixture(scope="session")
def queue_names() -> dict[str, str]:
    # Unique per run, so a shared Redis or a broker folder with old messages (from `make
    # run`, or another CI run) never feeds this run's worker.
    suffix = uuid.uuid4().hex[:8]
    return {"INFERENCE_QUEUE": f"test-inference-{suffix}", "TRAINING_QUEUE": f"test-training-{suffix}"}


@pytest.fixture(autouse=True)
def _queues(settings, queue_names):
    for name, value in queue_names.items():
        setattr(settings, name, value)


@pytest.fixture(autouse=True)
def _single_annotation(settings):
    # Tests that want double annotation turn it on; by default each image is labelled once.
    settings.DOUBLE_ANNOTATION_PERCENT = 0
    # Likewise retraining after N labels: the test that wants it sets it (and its worker's).
    settings.RETRAIN_AFTER_LABELS = 0


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-1")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-1")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("charlie", password="charlie-password-1", is_staff=True)


@pytest.fixture
def species(db):
    """The demo's classes and a production zero-shot version for them."""
    from classifier import registry

    registry.species_create_many(names=["dalmatian", "flamingo", "llama", "starfish", "dog", "cat"])
    return registry.zero_shot_version_sync()


def start_worker(*, queues: dict[str, str], log_dir: Path, media_dir: Path, env: dict | None = None,
                 pool: str = "prefork") -> subprocess.Popen:
    """A real `celery worker` process on the given queues and the test database."""
    from django.conf import settings
    from django.db import connection

    environ = dict(os.environ)
    environ.update(queues)
    environ.update(
        DATABASE_URL=worker_database_url(connection.settings_dict),
        MEDIA_ROOT=str(media_dir),
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        VAR_DIR=str(settings.VAR_DIR),
        ONNX_DIR=str(settings.ONNX_DIR),
        PYTHONUNBUFFERED="1",
    )
    environ.update(env or {})
    process = processes.start(processes.worker_command(list(queues.values()), pool=pool, name="test"),
                              env=environ, log_path=log_dir / "worker.log", name="the Celery worker")
    return processes.wait_ready(process, timeout=120)


def stop_worker(process: subprocess.Popen) -> None:
    processes.stop(process)
    if process.returncode not in (0, -15, -9):
        print(processes.tail(process.log_path, 80))


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, media_dir, queue_names, onnx_dir, tmp_path_factory):
    """A real `celery worker` process on this run's queues and the test database."""
    with django_db_blocker.unblock():
        process = start_worker(queues=queue_names, log_dir=tmp_path_factory.mktemp("worker"), media_dir=media_dir,
                               env={"RETRAIN_AFTER_LABELS": "0", "ONNX_DIR": str(onnx_dir)})
    yield process
    stop_worker(process)


@pytest.fixture
def dalmatian_jpeg() -> bytes:
    return demo_photo("dalmatian").read_bytes()


@pytest.fixture
def label_images(species):
    """label_images({"cat": 12, "dog": 12}) -> images with an imported label each and a stored
    feature vector near their class's centre: a random direction in every dimension, as real
    features differ between classes (so a head separates them and zero-shot does not)."""
    import numpy as np

    from classifier.models import Species
    from labeling.models import Annotation
    from tests.labeling.factories import EMBEDDING_DIM, annotate, predicted_image

    rng = np.random.default_rng(0)
    centres = {}

    def make(counts: dict[str, int], *, wrong: dict[str, str] | None = None) -> list:
        images = []
        for name, n in counts.items():
            centre = centres.setdefault(name, rng.normal(0.0, 1.0, EMBEDDING_DIM))
            for _ in range(n):
                # Pooled ReLU features: >= 0. The noise keeps two photos of a class at cosine ~0.74, well
                # below NEAR_DUPLICATE_COSINE (0.85): at 0.5 they sat at ~0.85, so near-duplicate links
                # formed at random between runs and moved whole classes to one split.
                vector = np.abs(centre + rng.normal(0.0, 1.0, EMBEDDING_DIM))
                image = predicted_image(version=species, embedding=vector)
                label = (wrong or {}).get(name, name)
                annotate(image=image, kind=Annotation.Kind.IMPORTED, role=Annotation.Role.IMPORT,
                         species=Species.objects.get(name=label))
                images.append(image)
        return images

    return make
