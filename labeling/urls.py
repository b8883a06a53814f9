from django.urls import path

from . import api, views

urlpatterns = [
    path("review/", views.review, name="review"),
    path("api/review/next/", api.queue_next, name="api-review-next"),
    path("api/review/decisions/", api.decision_create, name="api-review-decide"),
    path("api/review/undo/", api.decision_undo, name="api-review-undo"),
    path("api/review/skip/", api.skip, name="api-review-skip"),
    path("api/images/<int:image_id>/history/", api.image_history, name="api-image-history"),
    path("api/images/<int:image_id>/feedback/", api.image_feedback, name="api-image-feedback"),
]
