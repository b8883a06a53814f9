from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.shortcuts import render

from classifier.ml.datasets import SPLITS
from classifier.selectors import active_species

from . import label_errors, selectors, services
from .agreement import agreement
from .models import ImportJob


@login_required
@permission_required("labeling.annotate", raise_exception=True)
def review(request):
    classes = [{"name": s.name, "label": s.label} for s in active_species()]
    recent = selectors.recent_decisions(request.user, limit=services.REOPEN_RECENT)
    return render(request, "labeling/review.html",
                  {"classes": classes, "prefetch": settings.REVIEW_PREFETCH, "recent": recent})


@login_required
@permission_required("labeling.review", raise_exception=True)
def labels(request):
    jobs = list(ImportJob.objects.all()[:10])
    suspects = label_errors.import_suspects([j.id for j in jobs if j.status == ImportJob.Status.DONE])
    ctx = {
        "counts": selectors.label_counts(),
        "splits": SPLITS,
        "min_per_class": settings.TRAINING_MIN_PER_CLASS,
        "imports": [{"job": j, "suspects": suspects.get(j.id, [])} for j in jobs],
        "agreement": agreement(),
    }
    return render(request, "labeling/labels.html", ctx)
