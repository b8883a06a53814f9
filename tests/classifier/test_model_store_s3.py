"""The model store on a real S3-compatible server (moto's, on a loopback port): a version trained on
one node is published to the bucket, and a node that shares no folder with it downloads, checks and
serves it; a damaged object is named with its version."""

import pytest

pytest.importorskip("storages.backends.s3", reason="the s3 extra (django-storages, boto3) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (a dev dependency) is not installed")

import boto3  # noqa: E402

from classifier import model_store, serving  # noqa: E402
from classifier.ml.cards import CARD_FILE  # noqa: E402
from classifier.models import TrainingRun  # noqa: E402
from classifier.training import runs  # noqa: E402

pytestmark = pytest.mark.django_db

BUCKET = "animalsite-models"
KEYS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_url():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_url, settings, tmp_path, models_root):
    client = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id=KEYS["access_key"],
                          aws_secret_access_key=KEYS["secret_key"], region_name=KEYS["region_name"])
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {**settings.STORAGES, "models": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": BUCKET, "endpoint_url": s3_url, **KEYS}}}
    settings.MODELS_CACHE_DIR = tmp_path / "cache"
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def test_a_version_published_to_s3_is_served_by_a_node_that_never_saw_its_folder(
        bucket, label_images, species, settings, tmp_path, dalmatian_jpeg):
    from classifier.ml.images import decode_image

    label_images({"cat": 15, "dog": 15, "llama": 15})
    run = runs.training_execute(run_id=runs.training_request(mode="head", trigger=TrainingRun.Trigger.MANUAL).id)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    version = run.version
    keys = {o["Key"] for o in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {f"{version.model_dir}/{name}" for name in [CARD_FILE, *version.card["files"]]}

    settings.MODELS_ROOT = tmp_path / "other-node"  # nothing of the trainer's on this node
    folder = serving.model_dir_of(version)
    result = serving.build_predictor(version).predict([decode_image(dalmatian_jpeg).image])[0]

    assert folder.is_relative_to(settings.MODELS_CACHE_DIR)
    assert result.label in version.classes

    (weights,) = version.card["files"]
    bucket.put_object(Bucket=BUCKET, Key=f"{version.model_dir}/{weights}", Body=b"not the weights")
    settings.MODELS_CACHE_DIR = tmp_path / "third-node-cache"
    with pytest.raises(model_store.ModelStoreError, match=f"{version.name}: {weights} .*does not match"):
        serving.model_dir_of(version)
    bucket.delete_object(Bucket=BUCKET, Key=f"{version.model_dir}/{weights}")
    with pytest.raises(model_store.ModelStoreError, match=f"{version.name}: {weights} is missing"):
        serving.model_dir_of(version)
