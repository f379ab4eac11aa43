import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from labeling import services
from labeling.services import ANNOTATOR_GROUP

pytestmark = pytest.mark.django_db


def test_create_annotator_command_makes_a_non_staff_member_of_the_annotator_group(capsys):
    call_command("create_annotator", "carol", password="carol-pass-123")
    carol = User.objects.get(username="carol")
    assert not carol.is_staff and carol.groups.filter(name=ANNOTATOR_GROUP).exists()
    assert carol.check_password("carol-pass-123")
    assert "annotator carol / carol-pass-123" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-1", "too short"),
        ("password123", "too common"),
        ("4815162342", "entirely numeric"),
        ("carol123", "too similar to the username"),
    ],
)
def test_create_annotator_refuses_a_weak_password_naming_why_and_stores_nothing(password, reason):
    with pytest.raises(CommandError, match=f"password for carol refused: .*{reason}"):
        call_command("create_annotator", "carol", password=password)
    assert not User.objects.filter(username="carol").exists()


def test_resetting_an_annotator_to_a_weak_password_keeps_the_old_one(alice):
    with pytest.raises(ValidationError):
        services.annotator_create(username="alice", password="12345678")
    alice.refresh_from_db()
    assert alice.check_password("alice-password-1")


def test_load_demo_refuses_a_weak_admin_password_before_loading_anything():
    with pytest.raises(CommandError, match="demo password refused: .*too common"):
        call_command("load_demo", admin_password="password")
    assert not User.objects.exists()


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
