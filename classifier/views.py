from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django_celery_beat.models import PeriodicTask

from . import charts, selectors, workers
from .ml.coverage import LEARNED, NOT_SERVED, ZERO_SHOT, coverage_loss, serving_table
from .models import Image, InferenceJob, ModelEvent, ModelVersion, TrainingRun


@login_required
def upload(request):
    recent = selectors.images_visible_to(request.user).order_by("-created", "-id")[:24]
    ctx = {
        "recent": recent,
        "production": selectors.production_model(),
        "species": selectors.active_species(),
        "max_bytes": settings.UPLOAD_MAX_BYTES,
    }
    return render(request, "classifier/upload.html", ctx)


@login_required
def image_detail(request, image_id: int):
    image = get_object_or_404(Image, id=image_id)
    if not image.is_visible_to(request.user):
        raise Http404("No such image")
    summary = getattr(image, "summary", None)  # the data browser's row: its near-duplicate link
    duplicate = summary.near_duplicate_of if summary else None
    ctx = {"image": image, "prediction": image.latest_prediction(), "species": selectors.active_species(),
           # Named only to whoever may see it: never another uploader's photo (not even a private copy's twin).
           "near_duplicate": duplicate if duplicate is not None and duplicate.is_visible_to(request.user) else None}
    return render(request, "classifier/image_detail.html", ctx)


def healthz(request):
    """Liveness for load balancers and compose: the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as e:  # report, don't raise: this page must answer
        return JsonResponse({"ok": False, "database": str(e)}, status=503)
    return JsonResponse({"ok": True, "model": getattr(selectors.production_model(), "name", None)})


@login_required
@permission_required("classifier.train", raise_exception=True)
def training_page(request):
    production = selectors.production_model()
    versions = list(ModelVersion.objects.select_related("parent", "snapshot")[:30])
    for v in versions:  # what the promote button's confirmation names
        v.coverage_loss = coverage_loss(production.card, v.card) if production else []
    ctx = {
        "production": production,
        "versions": versions,
        "events": ModelEvent.objects.select_related("version", "previous", "user")[:15],
        "schedules": PeriodicTask.objects.filter(task__startswith="classifier.tasks.training").order_by("name"),
        "retrain_after": settings.RETRAIN_AFTER_LABELS,
        "retrain_mode": settings.RETRAIN_MODE,
        "workers": workers.workers_fresh(),
        "training_queue": settings.TRAINING_QUEUE,
        "fresh_s": settings.WORKER_FRESH_S,
    }
    ctx["training_workers"] = [w for w in ctx["workers"] if settings.TRAINING_QUEUE in w.queues]
    ctx["training_on_cuda"] = any(w.training_device == "cuda" for w in ctx["training_workers"])
    return render(request, "classifier/training.html", ctx)


@login_required
@permission_required("classifier.train", raise_exception=True)
def version_page(request, version_id: int):
    version = get_object_or_404(ModelVersion.objects.select_related("parent", "snapshot"), id=version_id)
    test = version.metrics.get("test", {})
    serving = serving_table(version.card)
    ctx = {
        "version": version,
        "serving": serving,
        "not_served": {c: s for c, s in serving.items() if s["how"] == NOT_SERVED},
        "coverage": {how: sorted(c for c, s in serving.items() if s["how"] == how) for how in (LEARNED, ZERO_SHOT)},
        "run": TrainingRun.objects.filter(version=version).order_by("created", "id").first(),  # the one that trained it
        "test": test,
        "per_class": [{"label": k, **v, "how": serving.get(k, {}).get("how", NOT_SERVED)}
                      for k, v in test.get("per_class", {}).items()],
        "confusion": charts.confusion_rows(test.get("classes", []), test.get("confusion_matrix", [])),
        "curves": charts.training_curves(version.kind, version.training.get("history", [])),
        "events": version.events.select_related("previous", "user"),
    }
    return render(request, "classifier/version.html", ctx)


@login_required
@permission_required("classifier.train", raise_exception=True)
def jobs_page(request):
    ctx = {"jobs": InferenceJob.objects.select_related("version", "requested_by")[:20],
           "production": selectors.production_model()}
    return render(request, "classifier/jobs.html", ctx)


@login_required
@permission_required("classifier.train", raise_exception=True)
def job_page(request, job_id: int):
    job = get_object_or_404(InferenceJob.objects.select_related("version"), id=job_id)
    return render(request, "classifier/job.html", {"job": job})
