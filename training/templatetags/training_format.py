"""Numbers on the round pages: margins with enough digits to differ from zero, KL never below zero."""

import math

from django import template

from training.plots import kl_shown

register = template.Library()


@register.filter
def significant(value: float | None, digits: int = 3) -> str:
    """`value` with at least `digits` significant digits and at least 3 decimals, never in e-notation:
    a reward margin of 0.00042 reads 0.000420, not 0.000."""
    if value is None or value == "":
        return "–"
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:.3f}"
    decimals = min(12, max(3, digits - 1 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


@register.filter
def kl(value: float | None) -> str:
    """A KL estimate clipped at 0, with 4 decimals (the note saying so is the template's)."""
    shown = kl_shown(None if value in (None, "") else float(value))
    return "–" if shown is None else f"{shown:.4f}"
