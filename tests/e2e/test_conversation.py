"""A multi-turn prompt in Chromium: the last turn in view on load, earlier turns folded, overflow signalled."""

import pytest
from django.urls import reverse

from tests.e2e.conftest import CHROMIUM, log_in
from tests.labeling.factories import make_pairs

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

LONG = "\n\n".join(f"Paragraph {i}: the moon's pull raises the water on the near side of the Earth." for i in range(40))
THREE_TURNS = [
    {"role": "user", "content": LONG},
    {"role": "assistant", "content": "Tides come from the moon. " * 30},
    {"role": "user", "content": "So why are there two high tides a day? LAST-TURN-MARKER"},
]


def in_view(page, selector: str, container: str) -> bool:
    """Whether the element is wholly inside the container's visible box (and the container inside the window)."""
    return page.evaluate(
        """([sel, box]) => {
            const e = document.querySelector(sel).getBoundingClientRect();
            const c = document.querySelector(box).getBoundingClientRect();
            return e.top >= c.top && e.bottom <= c.bottom && c.bottom <= window.innerHeight && e.height > 0;
        }""",
        [selector, container],
    )


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 1400, "height": 700}])
def test_the_last_turn_of_a_three_turn_prompt_is_in_view_on_load(page, live_server, campaign, alice, viewport):
    make_pairs(campaign, 1, messages=THREE_TURNS, texts=("Short A.", LONG))
    page.set_viewport_size(viewport)
    log_in(page, live_server, "alice", "alice-password-1")
    page.goto(live_server.url + reverse("label", args=[campaign.pk]))
    page.wait_for_selector("#pair:not([hidden])")
    last = "#prompt-body > .turn:last-child"
    assert "LAST-TURN-MARKER" in page.inner_text(last)
    assert in_view(page, last, "#prompt-body")
    assert page.inner_text("details.earlier > summary") == "Show 2 earlier turns"
    assert not page.is_visible("details.earlier .turn")

    # The long answer says there is more; the short one does not; they scroll on their own.
    long, short = ("left", "right") if "Paragraph 0" in page.inner_text("#left-body") else ("right", "left")
    assert "more-below" in page.get_attribute(f"#{long}-body", "class")
    assert "more-below" not in page.get_attribute(f"#{short}-body", "class")
    page.evaluate(f"document.getElementById('{long}-body').scrollTop = 200")
    # A function, not an expression string: the page's CSP forbids the eval Playwright would poll an expression with.
    page.wait_for_function("id => document.getElementById(id).classList.contains('more-above')", arg=f"{long}-body")
    assert page.evaluate("document.getElementById('prompt-body').scrollTop") == 0

    page.keyboard.press("t")
    # The summary's words change on the details' toggle event, which the browser fires after the opening.
    page.wait_for_function(
        "() => document.querySelector('details.earlier > summary').textContent.trim() === 'Hide 2 earlier turns'"
    )
    assert page.is_visible("details.earlier .turn")
    assert "more-below" in page.get_attribute("#prompt-body", "class") or "more-above" in page.get_attribute(
        "#prompt-body", "class"
    )
    page.screenshot(path=f"var/screenshots/conversation-{viewport['width']}x{viewport['height']}.png")
