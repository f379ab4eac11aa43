"""Served as production serves it (DEBUG off, as in every test): WhiteNoise serves the collected static files, errors are plain."""

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from tests.waiting import wait_until

pytestmark = pytest.mark.django_db


class _Assets(HTMLParser):
    """The scripts and style sheets a page asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.urls.append(attributes["src"])
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.urls.append(attributes["href"])


def test_label_page_scripts_and_styles_are_served_from_the_collected_files(settings, tmp_path: Path, campaign, alice):
    assert not settings.DEBUG
    settings.STATIC_ROOT = tmp_path / "staticfiles"
    call_command("collectstatic", "--no-input", verbosity=0)
    client = Client()  # WhiteNoise indexes STATIC_ROOT when the handler loads its middleware: after collectstatic
    client.force_login(alice)
    page = client.get(reverse("label", args=[campaign.pk]))
    assets = _Assets()
    assets.feed(page.content.decode())
    assert {url.rsplit("/", 1)[-1] for url in assets.urls} >= {"compare.js", "labeling.css", "app.css"}

    for url in assets.urls:
        response = client.get(url, HTTP_ACCEPT_ENCODING="gzip")
        assert response.status_code == 200, url
        expected = "text/javascript" if url.endswith(".js") else "text/css"
        assert response["Content-Type"].startswith(expected), (url, response["Content-Type"])
        assert response["Content-Encoding"] == "gzip", url  # compressed once, at collectstatic
    source = Path(django_settings.BASE_DIR, "static", "labeling", "compare.js").read_bytes()
    assert b"".join(client.get("/static/labeling/compare.js").streaming_content) == source


def test_gunicorn_with_the_default_environment_serves_static_files_and_a_plain_500(settings, tmp_path: Path):
    """What `make run` starts: gunicorn, no DEBUG, SECRET_KEY or DATABASE_URL given (plus one failing view)."""
    var = tmp_path / "var"
    settings.STATIC_ROOT = var / "staticfiles"  # where the server below, with VAR_DIR=var, looks
    call_command("collectstatic", "--no-input", verbosity=0)
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "DATABASE_URL"}}
    env |= {"VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "tests.config.failing_settings"}
    log = tmp_path / "gunicorn.log"
    command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=django_settings.BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = _listening_at(server, log)
        with urllib.request.urlopen(f"{base}/static/labeling/compare.js") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/javascript")
            assert response.read() == Path(django_settings.BASE_DIR, "static", "labeling", "compare.js").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/fails/")
        assert error.value.code == 500
        body = error.value.read().decode()
        assert "Server Error (500)" in body
        for leak in ("Traceback", "RuntimeError", "a secret in its message", "SECRET_KEY", "DEBUG"):
            assert leak not in body
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (var / "secret_key").stat().st_mode & 0o777 == 0o600  # the embedded default made its own key


def _listening_at(server: subprocess.Popen, log: Path) -> str:
    def address() -> re.Match | None:
        match = re.search(rb"Listening at: (http://127\.0\.0\.1:\d+)", log.read_bytes())
        if not match and server.poll() is not None:
            pytest.fail(f"gunicorn exited ({server.returncode}) before it listened:\n{log.read_text()[-3000:]}")
        return match

    match = wait_until(address, what="gunicorn to listen", within_s=60, detail=lambda: log.read_text()[-3000:])
    return match.group(1).decode()
