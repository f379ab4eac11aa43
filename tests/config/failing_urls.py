"""The product's URLs plus one view that raises (tests only)."""

from django.urls import path

from config.urls import urlpatterns as product_urlpatterns


def fails(request):
    raise RuntimeError("a bug with a secret in its message")


urlpatterns = [path("fails/", fails), *product_urlpatterns]
