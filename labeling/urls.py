from django.urls import path

from classifier import converters  # noqa: F401  (registers <id:...>)

from . import api, browse_api, views

urlpatterns = [
    path("review/", views.review, name="review"),
    path("api/review/next/", api.queue_next, name="api-review-next"),
    path("api/review/decisions/", api.decision_create, name="api-review-decide"),
    path("api/review/undo/", api.decision_undo, name="api-review-undo"),
    path("api/review/decisions/<id:annotation_id>/reopen/", api.decision_reopen, name="api-review-reopen"),
    path("api/review/skip/", api.skip, name="api-review-skip"),
    path("api/images/<id:image_id>/history/", api.image_history, name="api-image-history"),
    path("api/images/<id:image_id>/feedback/", api.image_feedback, name="api-image-feedback"),
    path("labels/", views.labels, name="labels"),
    path("images/", views.browse, name="browse"),
    path("images/<id:image_id>/not-duplicate/", views.image_not_duplicate, name="image-not-duplicate"),
    path("api/images/bulk/", browse_api.bulk, name="api-images-bulk"),
    path("api/images/<id:image_id>/bulk-undo/", browse_api.bulk_undo, name="api-image-bulk-undo"),
    path("api/images/<id:image_id>/similar/", browse_api.image_similar, name="api-image-similar"),
    path("api/similar/", browse_api.photo_similar, name="api-similar"),
    path("api/images/<id:image_id>/not-duplicate/", browse_api.not_duplicate, name="api-image-not-duplicate"),
    path("api/imports/", api.import_create, name="api-import-create"),
    path("api/imports/<id:job_id>/", api.import_detail, name="api-import-detail"),
    path("api/export/", api.export, name="api-export"),
    path("api/agreement/", api.agreement, name="api-agreement"),
]
