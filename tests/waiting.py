"""Waiting for a condition in a test: poll it, with a deadline that bounds a hang and is no timing check."""

import time
from collections.abc import Callable

import pytest


def wait_until(
    condition: Callable[[], object], *, what: str, within_s: float, pause: Callable[[], None] = lambda: time.sleep(0.05)
) -> None:
    """Call `pause` until `condition()` holds; fail naming `what` after `within_s` seconds. A Playwright test
    passes `page.wait_for_timeout`, so that the browser's events (a route handler) run while it waits."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {within_s} s for {what}, in vain")
        pause()
