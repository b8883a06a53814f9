"""The EfficientNet-Lite specs now keep the whole short side (resize = crop) instead of TF's
eval crop (resize to crop + 32, centre crop). Features stored until now were made with the old
crop; they are renamed to the key a version with that preprocessing reads and writes
(ModelVersion.embedding_key: "efficientnet_lite0@256-224"), so versions made before keep their
similarity index and stored-feature re-scoring, and no old vector is read as a new one."""

from django.db import migrations

OLD_LITE_CROPS = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def forwards(apps, schema_editor):
    Embedding = apps.get_model("classifier", "Embedding")
    for name, crop in OLD_LITE_CROPS.items():
        Embedding.objects.filter(backbone=name).update(backbone=f"{name}@{crop + 32}-{crop}")


def backwards(apps, schema_editor):
    Embedding = apps.get_model("classifier", "Embedding")
    for name, crop in OLD_LITE_CROPS.items():
        old = f"{name}@{crop + 32}-{crop}"
        # Rows made since under the new crop have no place in the old scheme.
        Embedding.objects.filter(backbone=name).delete()
        Embedding.objects.filter(backbone=old).update(backbone=name)


class Migration(migrations.Migration):

    dependencies = [("classifier", "0010_image_private_copies")]

    operations = [migrations.RunPython(forwards, backwards)]
