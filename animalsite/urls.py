from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from classifier.api import images as images_api
from labeling import browse_api


def serve_media(request, path):
    # MEDIA_ROOT is read per request: tests (and operators) may point it elsewhere.
    return serve(request, path, document_root=settings.MEDIA_ROOT)


router = DefaultRouter()
router.register("images", browse_api.ImageViewSet, basename="api-image")
router.register("species", images_api.SpeciesViewSet, basename="api-species")

urlpatterns = [
    path("", include("classifier.urls")),
    path("", include("labeling.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

if settings.STORAGES["default"]["BACKEND"].endswith("FileSystemStorage"):
    # Local media in the embedded default and in tests; a real deployment serves media from
    # its object store or a web server in front of gunicorn.
    urlpatterns += [re_path(r"^media/(?P<path>.*)$", serve_media)]
