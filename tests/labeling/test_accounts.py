import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse

from labeling.services import ANNOTATOR_GROUP

pytestmark = pytest.mark.django_db


def test_create_annotator_command_makes_a_non_staff_member_of_the_annotator_group(capsys):
    call_command("create_annotator", "carol", password="carol-pass-123")
    carol = User.objects.get(username="carol")
    assert not carol.is_staff and carol.groups.filter(name=ANNOTATOR_GROUP).exists()
    assert carol.check_password("carol-pass-123")
    assert "annotator carol / carol-pass-123" in capsys.readouterr().out


def test_annotator_logs_in_and_out_through_the_pages(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("home")).status_code == 302


def test_wrong_password_is_refused_with_a_message(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_annotator_cannot_open_the_admin(client, alice):
    client.force_login(alice)
    assert client.get("/admin/").status_code == 302


def test_staff_see_the_rounds_and_admin_links_annotators_do_not(client, admin_user, alice):
    client.force_login(admin_user)
    page = client.get(reverse("home")).content.decode()
    assert 'href="/training/"' in page and 'href="/admin/"' in page
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert 'href="/training/"' not in page and 'href="/admin/"' not in page
