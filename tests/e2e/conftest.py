"""Browser fixtures: Debian's Chromium (headless) driven by Playwright, and logging in with the keyboard."""

from pathlib import Path

import pytest
from django.db import connections
from django.urls import reverse

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page(live_server, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        # Give wait_for_function a function ("() => ..."), never a bare expression: Playwright evaluates a bare
        # expression with eval again on every poll, which the pages' CSP (script-src 'self') refuses since
        # Chromium 156; a function is compiled once, while the call is still inside Playwright's evaluate.
        page.dialogs = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        yield page
        browser.close()
        # Inside sync_playwright the test's ORM calls run in another context, so Django opened a
        # second connection for them; close it, or the test database cannot be dropped afterwards.
        connections.close_all()


def log_in(page, live_server, username: str, password: str) -> None:
    page.goto(live_server.url + reverse("login"))
    page.wait_for_function("() => document.activeElement.id === 'id_username'")  # autofocus
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(live_server.url + reverse("home"))
