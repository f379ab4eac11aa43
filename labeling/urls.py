from django.urls import path

from labeling import api, views

urlpatterns = [
    path("label/<int:pk>/", views.label, name="label"),
    path("staff/campaigns/<int:pk>/", views.dashboard, name="campaign-dashboard"),
    path("staff/campaigns/<int:pk>/plot.png", views.dashboard_plot, name="campaign-dashboard-plot"),
    path("api/auth/token/", api.TokenView.as_view(), name="api-token"),
    path("api/labeling/campaigns/", api.CampaignListView.as_view(), name="api-campaigns"),
    path("api/labeling/campaigns/<int:pk>/next/", api.NextPairView.as_view(), name="api-next"),
    path("api/labeling/campaigns/<int:pk>/me/", api.MyStatsView.as_view(), name="api-my-stats"),
    path("api/labeling/campaigns/<int:pk>/progress/", api.CampaignProgressView.as_view(), name="api-progress"),
    path("api/labeling/assignments/<int:pk>/submit/", api.SubmitView.as_view(), name="api-submit"),
    path("api/labeling/assignments/<int:pk>/skip/", api.SkipView.as_view(), name="api-skip"),
    path("api/labeling/assignments/<int:pk>/undo/", api.UndoView.as_view(), name="api-undo"),
    path("api/labeling/assignments/<int:pk>/flag/", api.FlagView.as_view(), name="api-flag"),
]
