from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from classifier.api import images as images_api
from labeling import browse_api

from .media import media_file

handler404 = "animalsite.not_found.not_found"

router = DefaultRouter()
router.register("images", browse_api.ImageViewSet, basename="api-image")
router.register("species", images_api.SpeciesViewSet, basename="api-species")

# The database or the broker away: 503, not an HTML 500 (animalsite/errors.py); JSON under /api/.
handler500 = "animalsite.errors.server_error"

urlpatterns = [
    path("", include("classifier.urls")),
    path("", include("labeling.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

# Media is private: every file goes through a permission check (animalsite/media.py), also
# behind nginx (X-Accel-Redirect) and with S3 (a redirect to a signed URL).
urlpatterns += [re_path(r"^media/(?P<path>.+)$", media_file, name="media")]
