from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.api import not_found
from labeling.views import home

urlpatterns = [
    path("", home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("labeling.urls")),
    path("training/", include("training.urls")),
    path("api/training/", include("training.api_urls")),
    path("generation/", include("generation.urls")),
    path("api/generation/", include("generation.api_urls")),
    re_path(r"^api/(?P<path>.*)$", not_found),  # last: only paths no API view took
]
