"""Who may reach what, login throttling, and hostile text that must never run."""

import json
from html.parser import HTMLParser

import pytest
from django.core.cache import cache
from django.urls import reverse

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


@pytest.fixture
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


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


def test_the_login_form_is_throttled_after_repeated_failures(client, alice, fresh_cache, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    wrong = {"username": "alice", "password": "guess"}
    assert [client.post(reverse("login"), wrong).status_code for _ in range(3)] == [200, 200, 200]
    response = client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 429 and "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_successful_login_clears_the_failure_count(client, alice, fresh_cache, settings):
    settings.LOGIN_FAILURE_LIMIT = 3
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "guess"})
    assert client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"}).status_code == 302
    client.logout()
    for _ in range(2):
        client.post(reverse("login"), {"username": "alice", "password": "guess"})
    assert client.post(reverse("login"), {"username": "alice", "password": "alice-password-1"}).status_code == 302


def test_the_login_form_needs_its_csrf_token(alice):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(
        reverse("login"), {"username": "alice", "password": "alice-password-1"}
    )
    assert response.status_code == 403
