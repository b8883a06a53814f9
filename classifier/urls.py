from django.urls import path

from . import views

urlpatterns = [
    path("", views.upload, name="upload"),
    path("images/<int:image_id>/", views.image_detail, name="image-detail"),
    path("healthz", views.healthz, name="healthz"),
]
