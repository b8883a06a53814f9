from django.contrib import admin

from . import registry
from .models import (
    DatasetSnapshot,
    Embedding,
    Image,
    InferenceJob,
    ModelEvent,
    ModelVersion,
    OutboxMessage,
    Prediction,
    Species,
    TrainingRun,
    Upload,
)


@admin.register(Species)
class SpeciesAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "active", "merged_into", "imagenet_classes"]
    list_filter = ["active"]
    search_fields = ["name", "display_name"]
    readonly_fields = ["merged_into"]
    actions = ["merge_into_first"]

    @admin.action(description="Merge the selected classes into the first one selected (by name)")
    def merge_into_first(self, request, queryset):
        target, *sources = list(queryset.order_by("name"))
        for source in sources:
            registry.species_merge(source=source, target=target)
        self.message_user(request, f"Merged {', '.join(s.name for s in sources) or 'nothing'} into {target.name}.")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A new class or mapping is a new zero-shot version, never an edit of the old one.
        registry.zero_shot_version_sync()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        registry.zero_shot_version_sync()


class PredictionInline(admin.TabularInline):
    model = Prediction
    extra = 0
    fields = ["model_version", "label", "confidence", "backend", "model_ms", "latency_ms", "created"]
    readonly_fields = fields
    can_delete = False


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["id", "sha256", "status", "format", "width", "height", "created"]
    list_filter = ["status", "format"]
    search_fields = ["sha256"]
    readonly_fields = [f.name for f in Image._meta.fields]
    inlines = [PredictionInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "backbone", "status", "created", "promoted"]
    list_filter = ["kind", "status"]
    # Status changes go through the training page or API (gate, promote, roll back: logged).
    readonly_fields = ["name", "kind", "backbone", "card", "card_sha256", "status", "parent", "created", "promoted",
                       "model_dir", "snapshot", "gate", "status_reason"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Audit and job records: looked at, never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "mode", "trigger", "status", "stage", "version", "requested_by", "created", "finished"]
    list_filter = ["mode", "trigger", "status"]


@admin.register(ModelEvent)
class ModelEventAdmin(ReadOnlyAdmin):
    list_display = ["created", "action", "version", "previous", "user", "reason"]
    list_filter = ["action"]


@admin.register(DatasetSnapshot)
class DatasetSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["sha256", "created", "classes"]
    exclude = ["items"]  # thousands of rows: the version page and the API show the counts


@admin.register(InferenceJob)
class InferenceJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "source", "status", "version", "processed", "total", "failed_images", "created"]
    list_filter = ["source", "status"]
    exclude = ["image_ids"]


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    """Tasks waiting for the broker or a worker (docs/operations.md): the recovery loop sends them."""
    list_display = ["id", "task_name", "args", "created", "sent_at", "delivered_at", "attempts", "last_error"]
    list_filter = ["task_name", ("delivered_at", admin.EmptyFieldListFilter)]


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["image", "user", "filename", "created"]
    raw_id_fields = ["image"]


admin.site.register(Prediction)
admin.site.register(Embedding)
