from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from labeling.models import Campaign


@login_required
def home(request: HttpRequest) -> HttpResponse:
    campaigns = Campaign.objects.filter(is_active=True)
    return render(request, "labeling/home.html", {"campaigns": campaigns})
