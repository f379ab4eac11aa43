from django.urls import path

from generation import views

app_name = "generation"

urlpatterns = [
    path("jobs/<int:pk>/", views.job_detail, name="job"),
]
