"""Who labels what: a campaign open to everyone, or to chosen annotators and groups."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.test import APIClient

from labeling import selectors
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


@pytest.fixture
def members_only(campaign, bob):
    """The campaign, open only to bob; with pairs."""
    campaign.open_to_everyone = False
    campaign.save()
    campaign.members.add(bob)
    make_pairs(campaign, 2)
    return campaign


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_queue_and_the_api_serve_only_members(members_only, alice, bob):
    outsider, member = api_as(alice), api_as(bob)
    refused = outsider.post(f"/api/labeling/campaigns/{members_only.pk}/next/")
    assert refused.status_code == 403 and "ask your lead" in refused.json()["detail"]
    assert outsider.get(f"/api/labeling/campaigns/{members_only.pk}/me/").status_code == 403
    assert outsider.get("/api/labeling/campaigns/").json() == []
    assert member.post(f"/api/labeling/campaigns/{members_only.pk}/next/").status_code == 200
    assert [c["id"] for c in member.get("/api/labeling/campaigns/").json()] == [members_only.pk]


def test_a_group_makes_its_annotators_members(members_only, alice):
    night_shift = Group.objects.create(name="night shift")
    alice.groups.add(night_shift)
    members_only.member_groups.add(night_shift)
    assert selectors.campaign_open_to(campaign=members_only, user=alice)
    assert api_as(alice).post(f"/api/labeling/campaigns/{members_only.pk}/next/").status_code == 200


def test_a_campaign_open_to_everyone_needs_no_membership(campaign, alice):
    make_pairs(campaign)
    assert list(selectors.campaigns_open_to(user=alice)) == [campaign]


def test_a_non_member_gets_the_apps_403_page_and_no_listing(client, members_only, alice, admin_user):
    client.force_login(alice)
    assert "helpfulness" not in client.get(reverse("home")).content.decode()
    response = client.get(reverse("label", args=[members_only.pk]))
    page = response.content.decode()
    assert response.status_code == 403 and "Not open to you" in page and "ask your lead" in page
    assert "/admin/login/" not in page
    client.force_login(admin_user)  # staff may open any campaign
    assert client.get(reverse("label", args=[members_only.pk])).status_code == 200


def test_membership_is_edited_in_the_campaign_admin(client, members_only, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("admin:labeling_campaign_change", args=[members_only.pk])).content.decode()
    assert 'name="open_to_everyone"' in page and 'name="members"' in page and 'name="member_groups"' in page
