from django.urls import path

from training import api

app_name = "training-api"

urlpatterns = [
    path("snapshots/", api.SnapshotCreateApi.as_view(), name="snapshot-create"),
    path("snapshots/<int:pk>/", api.SnapshotDetailApi.as_view(), name="snapshot-detail"),
    path("snapshots/<int:pk>/file/", api.SnapshotFileApi.as_view(), name="snapshot-file"),
    path("rounds/", api.RoundStartApi.as_view(), name="round-start"),
    path("rounds/<int:pk>/", api.RoundDetailApi.as_view(), name="round-detail"),
    path("rounds/<int:pk>/cancel/", api.RoundCancelApi.as_view(), name="round-cancel"),
    path("campaigns/<int:pk>/leaderboard/", api.LeaderboardApi.as_view(), name="leaderboard"),
]
