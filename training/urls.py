from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.rounds_index, name="rounds"),
    path("rounds/<int:pk>/", views.round_detail, name="round"),
    path("rounds/<int:pk>/status.json", views.round_status, name="round-status"),
    path("rounds/<int:pk>/curves.png", views.round_curves_png, name="round-curves"),
    path("rounds/<int:pk>/cancel/", views.round_cancel, name="round-cancel"),
    path("campaigns/<int:pk>/rounds.png", views.campaign_rounds_png, name="campaign-rounds"),
    path("campaigns/<int:pk>/loop.png", views.campaign_loop_png, name="campaign-loop"),
]
