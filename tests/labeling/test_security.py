"""Who may reach what, login throttling, and hostile text that must never run."""

import json
from html.parser import HTMLParser

import pytest
from django.core.management import call_command
from django.test import RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling.login_guard import client_ip, username_key
from labeling.rendering import markdown_to_safe_html
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db

HOSTILE = [
    "<script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 1">',
    '<iframe src="javascript:window.__pwned = 1"></iframe>',
    "[click me](javascript:window.__pwned=1)",
    '<a href="javascript:window.__pwned=1">link</a>',
    "<svg onload=window.__pwned=1>",
    "<div>\n<script>window.__pwned = 1</script>\n</div>",
]


class _Elements(HTMLParser):
    """Every element and attribute a browser would build from the HTML."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((name, value or "") for name, value in attrs)


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_markup_becomes_inert_text(text):
    elements = _Elements(markdown_to_safe_html(text))
    assert not {"script", "iframe", "img", "svg"} & set(elements.tags)
    assert not [name for name, _ in elements.attrs if name.startswith("on")]
    assert not [value for name, value in elements.attrs if "javascript" in value.lower()]


def test_hostile_tags_are_shown_as_the_literal_text():
    assert markdown_to_safe_html("<script>alert(1)</script>") == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"


def test_markdown_and_code_still_render():
    html = markdown_to_safe_html("**bold** [site](https://example.com)\n\n```\nif a < b:\n```")
    assert "<strong>bold</strong>" in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">site</a>' in html
    assert "<pre><code>if a &lt; b:\n</code></pre>" in html


def test_label_page_embeds_hostile_text_only_as_escaped_json_under_a_strict_csp(client, campaign, alice):
    make_pairs(campaign, texts=(HOSTILE[0], HOSTILE[1]), prompt_text=HOSTILE[2])
    client.force_login(alice)
    response = client.get(reverse("label", args=[campaign.pk]))
    page = response.content.decode()
    assert "<script>window" not in page and "<iframe" not in page and "<img" not in page
    assert "script-src 'self'" in response["Content-Security-Policy"]
    start = page.index('id="first-pair" type="application/json">') + len('id="first-pair" type="application/json">')
    pair = json.loads(page[start : page.index("</script>", start)])
    assert {pair["left"]["text"], pair["right"]["text"]} == {HOSTILE[0], HOSTILE[1]}


def test_labeling_pages_need_a_login(client, campaign):
    for url in (reverse("home"), reverse("label", args=[campaign.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["campaign-dashboard", "campaign-dashboard-plot"])
def test_staff_pages_turn_annotators_away_in_app(client, campaign, alice, name):
    client.force_login(alice)
    response = client.get(reverse(name, args=[campaign.pk]))
    # The app's own 403 page (with its top bar), not a redirect to the admin login.
    assert response.status_code == 403 and "This page is for staff" in response.content.decode()
    assert "Back to your campaigns" in response.content.decode()


ALICE = {"username": "alice", "password": "alice-password-1"}
WRONG = {"username": "alice", "password": "guess"}


def test_the_login_form_is_locked_after_repeated_failures_with_a_page_saying_so(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    assert [client.post(reverse("login"), WRONG).status_code for _ in range(3)] == [200, 200, 200]
    response = client.post(reverse("login"), ALICE)
    assert response.status_code == 429
    assert "registration/locked_out.html" in [t.name for t in response.templates]
    assert "Too many failed logins for this username from your address. Wait 5 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_successful_login_clears_the_failure_count(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        client.post(reverse("login"), WRONG)
    assert client.post(reverse("login"), ALICE).status_code == 302
    client.logout()
    for _ in range(2):
        client.post(reverse("login"), WRONG)
    assert client.post(reverse("login"), ALICE).status_code == 302


def test_axes_reset_username_lifts_a_pause_at_once(client, alice):
    for _ in range(5):
        client.post(reverse("login"), WRONG)
    assert client.post(reverse("login"), ALICE).status_code == 429
    call_command("axes_reset_username", "alice")
    assert client.post(reverse("login"), ALICE).status_code == 302


def test_the_page_the_admin_and_the_token_api_share_one_count(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    assert client.post(reverse("login"), WRONG).status_code == 200
    assert client.post("/admin/login/", WRONG).status_code == 200
    assert APIClient().post("/api/auth/token/", WRONG).status_code == 400
    assert APIClient().post("/api/auth/token/", ALICE).status_code == 429
    response = client.post(reverse("login"), ALICE)
    assert response.status_code == 429 and "_auth_user_id" not in client.session


def test_the_admin_login_refuses_the_right_password_after_twenty_wrong_ones(client, admin_user):
    wrong = {"username": "ada", "password": "guess", "next": "/admin/"}
    statuses = [client.post("/admin/login/", wrong).status_code for _ in range(20)]
    assert statuses == [200] * 5 + [429] * 15
    response = client.post("/admin/login/", {"username": "ada", "password": "ada-password-1", "next": "/admin/"})
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_full_width_spellings_of_a_username_share_its_count(client, alice):
    # NFKC folds each of these to "alice"; none may get tries of its own.
    for name in ["ａｌｉｃｅ", "ａlice", "alｉce", "ａｌｉｃｅ", "alicｅ"]:
        assert client.post(reverse("login"), {"username": name, "password": "guess"}).status_code == 200
    assert client.post(reverse("login"), ALICE).status_code == 429
    assert username_key(None, {"username": "ａｌｉｃｅ"}) == "alice"


def test_locking_out_one_address_leaves_the_user_free_elsewhere(client, alice, bob):
    attacker, elsewhere = {"REMOTE_ADDR": "10.0.0.7"}, {"REMOTE_ADDR": "10.0.0.8"}
    for _ in range(5):
        for name in ("alice", "bob"):
            client.post(reverse("login"), {"username": name, "password": "guess"}, **attacker)
    assert client.post(reverse("login"), ALICE, **attacker).status_code == 429
    assert client.post(reverse("login"), ALICE, **elsewhere).status_code == 302
    assert APIClient().post("/api/auth/token/", {"username": "bob", "password": "bob-password-1"}, **elsewhere).status_code == 200


def test_a_forged_forwarded_for_header_neither_escapes_the_count_nor_spoofs_another_client(client, alice):
    # No proxy configured: the header is the client's own text and is ignored.
    for i in range(5):
        client.post(reverse("login"), WRONG, REMOTE_ADDR="10.0.0.7", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}")
    assert client.post(reverse("login"), ALICE, REMOTE_ADDR="10.0.0.7", HTTP_X_FORWARDED_FOR="10.0.0.8").status_code == 429
    assert client.post(reverse("login"), ALICE, REMOTE_ADDR="10.0.0.8").status_code == 302


def test_behind_a_trusted_proxy_only_the_address_it_wrote_counts(client, alice, settings):
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    proxy = {"REMOTE_ADDR": "127.0.0.1"}  # every request arrives from the proxy
    for i in range(5):  # the client prepends a different forged address each time; the proxy appends the real one
        client.post(reverse("login"), WRONG, HTTP_X_FORWARDED_FOR=f"10.9.9.{i}, 10.0.0.7", **proxy)
    locked = client.post(reverse("login"), ALICE, HTTP_X_FORWARDED_FOR="10.0.0.8, 10.0.0.7", **proxy)
    assert locked.status_code == 429
    assert client.post(reverse("login"), ALICE, HTTP_X_FORWARDED_FOR="10.0.0.8", **proxy).status_code == 302


@pytest.mark.parametrize(
    ("header", "count", "forwarded", "expected"),
    [
        ("", 1, "10.0.0.9", "127.0.0.1"),  # no proxy configured: the header is not believed
        ("X-Forwarded-For", 1, "10.9.9.9, 10.0.0.7", "10.0.0.7"),
        ("X-Forwarded-For", 2, "10.9.9.9, 10.0.0.7, 10.1.1.1", "10.0.0.7"),  # CDN, then our proxy
        ("X-Forwarded-For", 1, None, "127.0.0.1"),  # came straight to the app, not through the proxy
        ("X-Forwarded-For", 1, "not an address", "127.0.0.1"),
        ("X-Real-IP", 1, "10.0.0.7", "10.0.0.7"),
    ],
)
def test_the_client_address_comes_from_the_trusted_proxy_header(settings, header, count, forwarded, expected):
    settings.TRUSTED_PROXY_HEADER, settings.TRUSTED_PROXY_COUNT = header, count
    meta = {} if forwarded is None else {"HTTP_" + (header or "X-Forwarded-For").upper().replace("-", "_"): forwarded}
    assert client_ip(RequestFactory().post("/login/", REMOTE_ADDR="127.0.0.1", **meta)) == expected


def test_a_long_username_is_counted_not_a_server_error(alice):
    response = APIClient().post("/api/auth/token/", {"username": "a" * 5000, "password": "guess"})
    assert response.status_code == 400 and not Token.objects.exists()


def test_the_login_form_needs_its_csrf_token(alice):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(
        reverse("login"), {"username": "alice", "password": "alice-password-1"}
    )
    assert response.status_code == 403
