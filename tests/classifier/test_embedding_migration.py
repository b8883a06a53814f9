"""Migration 0011: features stored under the old Lite crop keep a key of their own."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("classifier", "0010_image_private_copies")]
AFTER = [("classifier", "0011_lite_embeddings_keyed_by_crop")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_lite_features_made_with_tf_crop_are_renamed_and_others_kept():
    old = migrate(BEFORE)
    Image, Embedding = old.get_model("classifier", "Image"), old.get_model("classifier", "Embedding")
    image = Image.objects.create(sha256="a" * 64, original="o.jpg", preview="p.jpg", thumbnail="t.jpg",
                                 format="JPEG", original_mode="RGB", width=1, height=1, size_bytes=1)
    for name in ("efficientnet_lite0", "efficientnet_lite2", "resnet50"):
        Embedding.objects.create(image=image, backbone=name, dim=1, vector=b"\0\0\0\0")
    try:
        new = migrate(AFTER)
        keys = set(new.get_model("classifier", "Embedding").objects.values_list("backbone", flat=True))
        assert keys == {"efficientnet_lite0@256-224", "efficientnet_lite2@292-260", "resnet50"}

        back = migrate(BEFORE)
        keys = set(back.get_model("classifier", "Embedding").objects.values_list("backbone", flat=True))
        assert keys == {"efficientnet_lite0", "efficientnet_lite2", "resnet50"}
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
