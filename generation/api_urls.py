from django.urls import path

from generation import api

app_name = "generation-api"

urlpatterns = [
    path("jobs/", api.JobStartApi.as_view(), name="job-start"),
    path("jobs/<int:pk>/", api.JobDetailApi.as_view(), name="job-detail"),
]
