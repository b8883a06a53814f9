from django.urls import path

from . import (
    converters,  # noqa: F401  (registers <id:...>)
    views,
)
from .api import jobs as jobs_api
from .api import training as training_api
from .api import workers as workers_api

urlpatterns = [
    path("", views.upload, name="upload"),
    path("images/<id:image_id>/", views.image_detail, name="image-detail"),
    path("healthz", views.healthz, name="healthz"),
    path("training/", views.training_page, name="training"),
    path("models/<id:version_id>/", views.version_page, name="model-version-detail"),
    path("api/training/runs/", training_api.runs, name="api-training-runs"),
    path("api/training/runs/<id:run_id>/", training_api.run_detail, name="api-training-run"),
    path("api/training/runs/<id:run_id>/cancel/", training_api.run_cancel, name="api-training-cancel"),
    path("api/models/", training_api.versions, name="api-models"),
    path("api/models/<id:version_id>/", training_api.version_detail, name="api-model"),
    path("api/models/<id:version_id>/promote/", training_api.version_promote, name="api-model-promote"),
    path("api/models/rollback/", training_api.rollback, name="api-models-rollback"),
    path("api/models/events/", training_api.events, name="api-model-events"),
    path("api/workers/", workers_api.worker_list, name="api-workers"),
    path("jobs/", views.jobs_page, name="inference-jobs"),
    path("jobs/<id:job_id>/", views.job_page, name="inference-job"),
    path("api/jobs/", jobs_api.job_list, name="api-jobs"),
    path("api/jobs/<id:job_id>/", jobs_api.job_detail, name="api-job"),
    path("api/jobs/<id:job_id>/cancel/", jobs_api.job_cancel, name="api-job-cancel"),
]
