"""Human decisions about images, as an append-only history.

No row here is ever updated to change a label: a correction is a new Annotation, an undo is
a new Annotation that reverts an earlier one. The current label of an image is derived
(labeling.selectors.current_labels).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from classifier.models import Image, ModelVersion, Prediction, Species


class Annotation(models.Model):
    class Kind(models.TextChoices):
        ACCEPTED = "accepted", "accepted the suggestion"
        CORRECTED = "corrected", "chose another class"
        REJECTED = "rejected", "not an animal / none of these"
        FEEDBACK = "feedback", "uploader feedback"
        IMPORTED = "imported", "imported label"
        UNDO = "undo", "undid a decision"

    class Role(models.TextChoices):
        # Higher rank wins when deriving the current label (see selectors.current_labels).
        IMPORT = "import"
        UPLOADER = "uploader"
        ANNOTATOR = "annotator"
        REVIEWER = "reviewer"

    ROLE_RANK = {Role.IMPORT: 0, Role.UPLOADER: 0, Role.ANNOTATOR: 1, Role.REVIEWER: 2}
    LABELLING_KINDS = (Kind.ACCEPTED, Kind.CORRECTED, Kind.REJECTED, Kind.FEEDBACK, Kind.IMPORTED)

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="annotations")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    role = models.CharField(max_length=16, choices=Role.choices)
    species = models.ForeignKey(Species, null=True, blank=True, on_delete=models.PROTECT, related_name="annotations")
    label = models.CharField(max_length=100, blank=True, help_text="the class name at the time of the decision")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    prediction = models.ForeignKey(Prediction, null=True, blank=True, on_delete=models.SET_NULL)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL)
    suggested_label = models.CharField(max_length=100, blank=True)
    reverts = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reverted_by"
    )
    time_taken_ms = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(max_length=255, blank=True, help_text="e.g. the import file")
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created", "id"]
        permissions = [
            ("annotate", "Can work the review queue"),
            ("review", "Can make reviewer decisions, see agreement and export labels"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="undo", reverts__isnull=False) | (~Q(kind="undo") & Q(reverts__isnull=True)),
                name="undo_reverts_exactly_one",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.label or '-'} on image {self.image_id} by {self.user_id}"

    @property
    def is_label(self) -> bool:
        return self.kind in self.LABELLING_KINDS


class Claim(models.Model):
    """An image held by one annotator for a while, so two never work on it at once."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, related_name="claim")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="claims")
    token = models.CharField(max_length=32, unique=True)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(db_index=True)

    def is_live(self, now=None) -> bool:
        return self.expires > (now or timezone.now())


class Skip(models.Model):
    """An annotator passed on an image; it is not shown to them again."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="skips")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "user"], name="one_skip_per_user")]


class ImportJob(models.Model):
    """A zip in ImageFolder layout (class/photo.jpg) becoming images and imported labels."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    archive = models.FileField(max_length=255)
    filename = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    created_images = models.PositiveIntegerField(default=0)
    existing_images = models.PositiveIntegerField(default=0)
    rejected = models.JSONField(default=list, blank=True)  # [{"path": ..., "reason": ...}]
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    @property
    def percent(self) -> int:
        return int(100 * self.processed / self.total) if self.total else (100 if self.status == "done" else 0)


class ImageSummary(models.Model):
    """What the data browser filters and sorts on, one row per image: derived, never the truth.

    The current label comes from the annotation history and the prediction from the production
    version's Prediction row; this table only copies them where an index can serve a page of
    100,000 images. One writer keeps it (labeling.summaries); nothing else saves these rows.
    """

    image = models.OneToOneField(Image, primary_key=True, on_delete=models.CASCADE, related_name="summary")
    created = models.DateTimeField()  # the image's
    label = models.CharField(max_length=100, blank=True)  # current ground-truth label; "" unlabelled
    labelled_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    predicted = models.CharField(max_length=100, blank=True)  # the production version's; "" not predicted
    confidence = models.FloatField(null=True, blank=True)
    margin = models.FloatField(null=True, blank=True)  # top-1 minus top-2 probability
    disagrees = models.BooleanField(default=False)  # labelled and predicted, differently
    split = models.CharField(max_length=8)  # train/val/test, by content hash as snapshots assign it
    near_duplicate_of = models.ForeignKey(Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    duplicate_checked = models.BooleanField(default=False)  # compared once its features were stored

    class Meta:
        indexes = [
            models.Index(fields=["created", "image"], name="summary_created"),
            models.Index(fields=["confidence", "image"], name="summary_confidence"),
            models.Index(fields=["margin", "image"], name="summary_margin"),
            models.Index(fields=["label", "created", "image"], name="summary_label_created"),
            models.Index(fields=["predicted", "created", "image"], name="summary_predicted_created"),
            # Rare flags: without their own index a page walks the date index until it finds 61 of them
            # (all of it when there are none). Partial, so a promotion's rewrite of every row skips them.
            models.Index(fields=["created", "image"], name="summary_disagrees_created", condition=Q(disagrees=True)),
            models.Index(fields=["created", "image"], name="summary_near_duplicate_created",
                         condition=Q(near_duplicate_of__isnull=False)),
        ]


class NotDuplicate(models.Model):
    """A reviewer said `image` is not a duplicate of `other`, the earlier image it was linked to:
    the link is gone, and no later check links this pair again (ImageSummary holds no history)."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="not_duplicate_marks")
    other = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.UniqueConstraint(fields=["image", "other"], name="not_duplicate_once_per_pair")]


class ReviewRequest(models.Model):
    """Someone asked for a human look at an image (a bulk action from the browser): it enters the
    review queue until a person labels it after the request."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="review_requests")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
