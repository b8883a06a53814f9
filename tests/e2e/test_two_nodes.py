"""Two worker nodes and a web node that share no model folder, only the database, the broker and an
S3-compatible store (moto's server, on a loopback port): labels -> a head retrain on the training
node, published to the store -> promotion -> a new upload predicted by the new version on the
inference node, which downloaded it from the store -> the version page on this (web) process.

(Uploaded images stay on the shared media folder here: the labels are made on stored features,
with no image files, which only a file-system media storage tolerates.)
"""

import uuid

import pytest

pytest.importorskip("storages.backends.s3", reason="the s3 extra (django-storages, boto3) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (a dev dependency) is not installed")

import boto3  # noqa: E402

from classifier import serving, uploads  # noqa: E402
from classifier.models import ModelVersion, Prediction, TrainingRun  # noqa: E402
from labeling.roles import role_group  # noqa: E402
from tests.conftest import start_worker  # noqa: E402
from tests.helpers import demo_photo, wait_for  # noqa: E402
from tests.labeling.factories import clustered_images, label_from_queue  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

BUCKET = "two-nodes-models"
KEYS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3(settings):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, aws_access_key_id=KEYS["access_key"],
                 aws_secret_access_key=KEYS["secret_key"], region_name=KEYS["region_name"]).create_bucket(Bucket=BUCKET)
    yield {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": url, **KEYS}}
    server.stop()


def node_env(root, name: str, store: dict) -> dict:
    """A node's own folders (nothing shared with the others) and the shared store."""
    import json

    folder = root / name
    return {"MODELS_ROOT": str(folder / "models"), "MODELS_CACHE_DIR": str(folder / "model-cache"),
            "ONNX_DIR": str(folder / "onnx"), "EMBEDDING_CACHE_DIR": str(folder / "embeddings"),
            "MODELS_STORAGE": store["BACKEND"], "MODELS_STORAGE_OPTIONS": json.dumps(store["OPTIONS"]),
            "TRAINING_MIN_PER_CLASS": "3", "PROMOTION_MIN_TEST_IMAGES": "1", "TORCH_NUM_THREADS": "1",
            "RETRAIN_AFTER_LABELS": "24", "WORKER_HEARTBEAT_S": "1"}


def test_a_version_trained_on_one_node_serves_on_another_through_the_store(
        settings, s3, tmp_path, media_dir, species, django_user_model, alice, client):
    suffix = uuid.uuid4().hex[:8]
    queues = {"INFERENCE_QUEUE": f"nodes-inference-{suffix}", "TRAINING_QUEUE": f"nodes-training-{suffix}"}
    for name, value in queues.items():
        setattr(settings, name, value)
    settings.RETRAIN_AFTER_LABELS = 24
    # This process is the web node: its own folders, the shared store.
    settings.STORAGES = {**settings.STORAGES, "models": s3}
    settings.MODELS_ROOT, settings.MODELS_CACHE_DIR = tmp_path / "web" / "models", tmp_path / "web" / "model-cache"
    workers = []
    try:
        for role, queue in (("training", "TRAINING_QUEUE"), ("inference", "INFERENCE_QUEUE")):
            log_dir = tmp_path / f"{role}-log"
            log_dir.mkdir()
            workers.append(start_worker(queues={queue: queues[queue]}, log_dir=log_dir, media_dir=media_dir,
                                        env=queues | node_env(tmp_path, role, s3)))
        annotator = django_user_model.objects.create_user("ann")
        annotator.groups.add(role_group("annotator"))
        truth = clustered_images(species)
        label_from_queue(annotator, truth)

        run = wait_for(lambda: TrainingRun.objects.filter(status__in=TrainingRun.FINISHED).first(),
                       timeout=300, what="the head retrain on the training node")
        assert run.status == "succeeded", run.error
        version = run.version
        assert version.status == ModelVersion.Status.PRODUCTION, version.status_reason
        assert (tmp_path / "training" / "models" / version.model_dir).is_dir()
        assert not (tmp_path / "inference" / "models").exists()

        result = uploads.image_upload(user=alice, filename="dalmatian.jpg", data=demo_photo("dalmatian").read_bytes())
        prediction = wait_for(lambda: Prediction.objects.filter(image=result.image).first(), timeout=180,
                              what="the new upload's prediction on the inference node")

        assert prediction.model_version == version
        assert (tmp_path / "inference" / "model-cache" / version.card_sha256).is_dir()  # downloaded, checked
        client.force_login(django_user_model.objects.create_superuser("root", password="root-password-1"))
        page = client.get(f"/models/{version.id}/")
        assert page.status_code == 200 and version.name in page.content.decode()
        assert serving.model_dir_of(version) == settings.MODELS_CACHE_DIR / version.card_sha256  # the web node too
    finally:
        from tests.conftest import stop_worker

        for worker in workers:
            stop_worker(worker)
