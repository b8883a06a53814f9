import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


def image_path(sha256: str, suffix: str) -> str:
    # Content-addressed and fanned out, so no folder grows past a few thousand files.
    return f"images/{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix}"


class Species(models.Model):
    """A class the project predicts. Classes are data: staff add, rename and retire them."""

    name = models.CharField(max_length=100, unique=True, help_text="lower case, as it appears in labels")
    display_name = models.CharField(max_length=100, blank=True)
    imagenet_classes = models.JSONField(
        default=list, blank=True, help_text="ImageNet-1k class indices (0-999) summed into this class for zero-shot"
    )
    active = models.BooleanField(default=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="merged_from",
        help_text="set by a merge: labels of this class now count as that class",
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "species"

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return self.display_name or self.name

    def resolved(self) -> "Species":
        """The class this one's labels count as today, following merges."""
        species, seen = self, set()
        while species.merged_into_id and species.id not in seen:
            seen.add(species.id)
            species = species.merged_into
        return species


class Image(models.Model):
    """One picture, stored once per content (sha256 of the uploaded bytes)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PREDICTING = "predicting"
        PREDICTED = "predicted"
        FAILED = "failed"

    sha256 = models.CharField(max_length=64, unique=True)
    original = models.FileField(max_length=255)  # the bytes as uploaded
    preview = models.FileField(max_length=255)  # RGB JPEG, EXIF orientation applied, bounded size
    thumbnail = models.FileField(max_length=255)
    format = models.CharField(max_length=16)
    original_mode = models.CharField(max_length=16)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    status_changed = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(default=timezone.now)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["status", "status_changed"])]

    def __str__(self) -> str:
        return f"image {self.id} ({self.sha256[:12]})"

    def get_absolute_url(self) -> str:
        return reverse("image-detail", args=[self.id])

    def latest_prediction(self) -> "Prediction | None":
        return self.predictions.select_related("model_version").order_by("-created", "-id").first()

    def is_visible_to(self, user) -> bool:
        # Annotators and reviewers hold view_image (their roles); uploaders see their own.
        return user.is_staff or user.has_perm("classifier.view_image") or self.uploads.filter(user=user).exists()

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class Upload(models.Model):
    """Who sent which image, and when: one row per upload, even of the same content."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="uploads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads")
    filename = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]


class ModelVersion(models.Model):
    """A model as data: its card pins the classes in order and the preprocessing."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        PRODUCTION = "production"
        RETIRED = "retired"

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16)  # zero_shot, head, finetune
    backbone = models.CharField(max_length=64)
    card = models.JSONField()
    card_sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(default=timezone.now)
    promoted = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # Exactly one production version at a time, whatever the code above does.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="production"), name="one_production_version"
            ),
            models.UniqueConstraint(fields=["kind", "card_sha256"], name="one_version_per_card"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])


class Prediction(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    label = models.CharField(max_length=100)
    confidence = models.FloatField()
    top = models.JSONField()  # [{"label": ..., "p": ...}, ...] best first
    probabilities = models.JSONField()  # in the version's class order
    backend = models.CharField(max_length=32)
    model_ms = models.FloatField(help_text="time in the network")
    latency_ms = models.FloatField(help_text="from the image being queued to this prediction")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # A task delivered twice finds this row and writes nothing.
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_version"),
        ]


class Embedding(models.Model):
    """Pooled backbone features, computed once per (image, backbone) and reused."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="embeddings")
    backbone = models.CharField(max_length=64)
    dim = models.PositiveIntegerField()
    vector = models.BinaryField()  # float32, little endian
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "backbone"], name="one_embedding_per_backbone")]
