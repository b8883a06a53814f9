import hashlib

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from .ml.backbone_specs import embedding_key as stored_features_key


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
    """One row per content (sha256), plus a private copy per uploader who sent it after another."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PREDICTING = "predicting"
        PREDICTED = "predicted"
        FAILED = "failed"

    sha256 = models.CharField(max_length=64)
    # Set on a private copy: its answers (id, status, history) are the uploader's own, never another's.
    private_to = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, null=True, blank=True, related_name="+")
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
        constraints = [models.UniqueConstraint(fields=["sha256"], condition=Q(private_to__isnull=True),
                                               name="one_shared_image_per_content"),
                       models.UniqueConstraint(fields=["sha256", "private_to"], name="one_private_copy_per_user")]

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
    # Trained kinds: the folder under MODELS_ROOT (card.json, weights), written before this row exists.
    model_dir = models.CharField(max_length=255, blank=True)
    snapshot = models.ForeignKey("DatasetSnapshot", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="versions")
    gate = models.JSONField(default=dict, blank=True, help_text="the promotion gate's verdict against the champion")
    status_reason = models.TextField(blank=True)
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

    @property
    def metrics(self) -> dict:
        return self.card.get("metrics", {})

    @property
    def embedding_key(self) -> str:  # the stored features its predictions write and re-score from
        return stored_features_key(self.backbone, self.card.get("preprocessing"))

    @property
    def training(self) -> dict:
        return self.card.get("training", {})

    def get_absolute_url(self) -> str:
        return reverse("model-version-detail", args=[self.id])


class ModelEvent(models.Model):
    """Every change of the production version, and why: an audit log, never edited."""

    class Action(models.TextChoices):
        PROMOTED = "promoted"  # by the gate or the zero-shot sync
        PROMOTED_BY_HAND = "promoted_by_hand"
        ROLLED_BACK = "rolled_back"
        KEPT_CANDIDATE = "kept_candidate"  # the gate said no

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="events")
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=32, choices=Action.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]


class DatasetSnapshot(models.Model):
    """A frozen list of (image, label, split): exactly what one training run read. The split comes
    from the content hash (classifier.ml.datasets): an image in one test split is in every later one."""

    sha256 = models.CharField(max_length=64, unique=True)  # of the sorted (content, label, split) lines
    items = models.JSONField()  # [[image_id, image_sha256, label, split], ...]
    classes = models.JSONField()
    counts = models.JSONField()  # label -> {"train": n, "val": n, "test": n}
    excluded = models.JSONField(default=dict, blank=True)  # label -> why it was left out
    test_fraction = models.FloatField()
    val_fraction = models.FloatField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"snapshot {self.sha256[:12]} ({len(self.items)} images, {len(self.classes)} classes)"

    def split(self, name: str) -> list[list]:
        return [item for item in self.items if item[3] == name]


class TrainingRun(models.Model):
    """One request to train: queued, then run by one worker, leaving a candidate version or a reason.

    Every request is a row, automatic ones included: one that had nothing to do is SKIPPED, one
    today's labels cannot train is REFUSED, each with its `outcome` said in words.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        SKIPPED = "skipped"  # nothing to train: no label changed since the last good run
        REFUSED = "refused"  # today's labels cannot be trained on; `outcome` says why

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        LABELS = "labels"
        SCHEDULE = "schedule"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.SKIPPED, Status.REFUSED)

    mode = models.CharField(max_length=16)  # head, finetune
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    options = models.JSONField(default=dict, blank=True)  # overrides of the training settings, e.g. epochs
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="runs")
    # The version it trained, or the registered one it returned instead of training the same again.
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="training_runs")
    # What it trains on besides the labels: snapshot, mode, options with their defaults, parent.
    fingerprint = models.CharField(max_length=64, blank=True, db_index=True)
    outcome = models.TextField(blank=True, help_text="what became of the request, in words")
    stage = models.CharField(max_length=32, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # done, total, epoch, epochs, percent, eta_s, metrics
    history = models.JSONField(default=list, blank=True)  # one row per finished epoch
    cancel_requested = models.BooleanField(default=False)
    heartbeat = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)  # claims by a worker; a killed run is retried once
    enqueued = models.DateTimeField(null=True, blank=True)  # when a task for it was last sent
    worker = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        permissions = [("train", "Can train, promote and roll back models, and run batch inference jobs")]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=Q(status="running"), name="one_running_training"),
            # One run at a time; a second request for the same mode joins the queued run.
            models.UniqueConstraint(fields=["mode"], condition=Q(status="queued"), name="one_queued_training_per_mode"),
        ]

    def __str__(self) -> str:
        return f"training run {self.id} ({self.mode}, {self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class Prediction(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    label = models.CharField(max_length=100)
    confidence = models.FloatField()
    top = models.JSONField()  # [{"label": ..., "p": ...}, ...] best first
    probabilities = models.JSONField()  # in the version's class order
    backend = models.CharField(max_length=32)
    model_ms = models.FloatField(help_text="time in the network")
    latency_ms = models.FloatField(null=True, blank=True, help_text=(
        "from the image being queued to this prediction; empty for rows written in bulk (batch jobs,"
        " re-scoring), whose time in the network is model_ms"))
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            # A task delivered twice finds this row and writes nothing.
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_version"),
        ]


class Embedding(models.Model):
    """Pooled backbone features, computed once per image and reused."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="embeddings")
    backbone = models.CharField(max_length=64)  # ModelVersion.embedding_key: backbone and preprocessing
    dim = models.PositiveIntegerField()
    vector = models.BinaryField()  # float32, little endian
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "backbone"], name="one_embedding_per_backbone")]


class InferenceJob(models.Model):
    """Predict many images: all unlabelled ones, a selection, or the photos of an uploaded zip.
    InferenceChunk rows, each claimed once by a worker on the inference queue, written in bulk."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        PREPARING = "preparing"  # a zip being unpacked into images
        RUNNING = "running"
        DONE = "done"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class Source(models.TextChoices):
        UNLABELLED = "unlabelled"
        SELECTION = "selection"
        ZIP = "zip"
        REPREDICT = "repredict"  # started by a promotion: the new champion's unseen images
        EMBED = "embed"  # a new backbone's features while a trained version serves on the old (jobs.job_embed)

    REQUESTABLE = (Source.UNLABELLED, Source.SELECTION, Source.ZIP)
    FINISHED = (Status.DONE, Status.CANCELLED, Status.FAILED)

    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="inference_jobs")
    image_ids = models.JSONField(default=list, blank=True)  # selection; zip: filled once unpacked
    archive = models.FileField(max_length=255, blank=True)  # zip source, through the storage API
    filename = models.CharField(max_length=255, blank=True)
    rejected = models.JSONField(default=list, blank=True)  # [{"path", "reason"}] from the zip
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)  # images in finished chunks
    failed_images = models.PositiveIntegerField(default=0)
    chunk_size = models.PositiveIntegerField(default=64)
    cancel_requested = models.BooleanField(default=False)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"inference job {self.id} ({self.source}, {self.status})"

    def get_absolute_url(self) -> str:
        return reverse("inference-job", args=[self.id])

    @property
    def percent(self) -> float:
        if not self.total:
            return 100.0 if self.status == "done" else 0.0
        return round(100.0 * self.processed / self.total, 1)


class InferenceChunk(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        SKIPPED = "skipped"  # the job was cancelled first

    job = models.ForeignKey(InferenceJob, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    image_ids = models.JSONField()
    size = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    claimed = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)  # the running worker is alive (jobs.py)
    worker = models.CharField(max_length=255, blank=True)
    written = models.PositiveIntegerField(default=0)
    failed = models.JSONField(default=dict, blank=True)  # image id -> error
    seconds = models.FloatField(null=True, blank=True)
    decode_seconds = models.FloatField(null=True, blank=True)
    model_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_chunk_per_index")]


from .models_workers import WorkerNode  # noqa: E402,F401  (re-exported: every model is classifier.models.X)
from .outbox import OutboxMessage  # noqa: E402,F401  (its own module; registered with the app here)
