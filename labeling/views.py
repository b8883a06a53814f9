from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from classifier.errors import Rejected
from classifier.ml.datasets import SPLITS
from classifier.selectors import active_species

from . import browse as browse_reads
from . import label_errors, selectors, services, summaries
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
    counts, figures = selectors.label_counts(), browse_reads.class_figures()
    for row in counts:  # links into the browser: predicted as the class, suspected label errors
        row.predicted = figures.get(row.name, {}).get("predicted", 0)
        row.suspects = figures.get(row.name, {}).get("suspects", 0)
    ctx = {
        "counts": counts,
        "splits": SPLITS,
        "min_per_class": settings.TRAINING_MIN_PER_CLASS,
        "imports": [{"job": j, "suspects": suspects.get(j.id, [])} for j in jobs],
        "agreement": agreement(),
    }
    return render(request, "labeling/labels.html", ctx)


@login_required
def browse(request):
    """/images/: every image an annotator may see (an uploader's own), filtered and sorted by the URL."""
    images, filterset = browse_reads.filtered(request.user, request.GET)
    sort = request.GET.get("sort", browse_reads.DEFAULT_SORT)
    try:
        page = browse_reads.page(images, sort=sort, cursor=request.GET.get("cursor"))
    except browse_reads.InvalidCursor:
        page = browse_reads.page(images, sort=sort)
    query = request.GET.copy()
    query.pop("cursor", None)
    ctx = {
        "filter": filterset,
        "page": page,
        "sorts": list(browse_reads.SORTS),
        "query": query.urlencode(),
        "first_page": not request.GET.get("cursor"),
        "classes": [{"name": s.name, "label": s.label} for s in active_species()],
        "can_label": request.user.has_perm("labeling.review"),
        "can_predict": request.user.has_perm("classifier.train"),
    }
    return render(request, "labeling/browse.html", ctx)


@require_POST
@login_required
@permission_required("labeling.review", raise_exception=True)
def image_not_duplicate(request, image_id: int):
    """The image page's "Not a duplicate" form (the API's POST /api/images/{id}/not-duplicate/)."""
    try:
        summaries.near_duplicate_dismiss(user=request.user, image_id=image_id)
    except Rejected:
        pass  # not linked (any more: a second click); the page shows what was recorded
    return redirect("image-detail", image_id=image_id)
