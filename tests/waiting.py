"""Waiting for a condition in a test: poll it, with a deadline that bounds a hang and is no timing check."""

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    *,
    what: str,
    within_s: float,
    pause: Callable[[], None] = lambda: time.sleep(0.05),
    detail: Callable[[], str] = str,
) -> T:
    """Call `pause` until `condition()` holds, and return what it returned; fail naming `what` after
    `within_s` seconds, with `detail()` (the end of a process's log, say) when it has something to add. A
    condition fails the test itself when waiting longer is pointless (the process it waits on exited). A
    Playwright test passes `page.wait_for_timeout`, so that the browser's events (a route handler) run while
    it waits."""
    deadline = time.monotonic() + within_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            extra = detail()
            pytest.fail(f"waited {within_s} s for {what}, in vain" + (f":\n{extra}" if extra else ""))
        pause()
    return value
