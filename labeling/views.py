from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.shortcuts import render

from classifier.selectors import active_species

from .agreement import agreement
from .models import ImportJob


@login_required
@permission_required("labeling.annotate", raise_exception=True)
def review(request):
    classes = [{"name": s.name, "label": s.label} for s in active_species()]
    return render(request, "labeling/review.html", {"classes": classes, "prefetch": settings.REVIEW_PREFETCH})


@login_required
@permission_required("labeling.review", raise_exception=True)
def labels(request):
    ctx = {"jobs": ImportJob.objects.all()[:10], "agreement": agreement()}
    return render(request, "labeling/labels.html", ctx)
