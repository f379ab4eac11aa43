"""Scripted annotators' taste: small rules that prefer one completion of a pair.

An oracle is any function ``(prompt, text_a, text_b) -> "a" | "b" | "tie"``.
Built-ins are named below; ``--oracle package.module:function`` plugs in another.
"""

import importlib
import re
from collections.abc import Callable

Oracle = Callable[[str, str, str], str]
_WORD = re.compile(r"[a-z']+")

# Words the "positive" oracle likes. The first six occur, rarely, in the tiny model's corpus; the rest
# (none of which it holds, so the tiny model's scores do not move) give real text such as SmolLM2's a
# signal: with the six alone, 8 of 8 SmolLM2 pairs tied, with all of them 3 of 8 did not.
POSITIVE_WORDS = frozenset(
    {"happy", "kind", "warm", "gentle", "bright", "calm"}
    | set(
        "beautiful lovely wonderful joy joyful love loved peaceful serene delight delightful smile smiles smiling"
        " cheerful friendly hopeful vibrant glad pleasant sweet cozy kindness laughter laugh laughed grateful"
        " gratitude beauty radiant harmony comfort comforting tender graceful charming magical".split()
    )
)
# The other side of the tiny model's corpus: its cold, loud and strange words (each in 10-20% of its
# samples, as often as the positive ones), and the gloomy words real text would use. A taste the loop's
# defaults were not tuned for: it pulls away from the positive oracle's direction.
GLOOMY_WORDS = frozenset(
    {"cold", "loud", "strange", "huge", "slow", "tired", "lost"}
    | set(
        "dark darkness gloomy gloom grey gray sad sadness lonely alone empty silent shadow shadows storm stormy"
        " bitter broken fear afraid cry cried tears weary dull heavy grim bleak hollow".split()
    )
)
BANNED_WORD = "strange"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _prefer(score_a: float, score_b: float) -> str:
    if score_a == score_b:
        return "tie"
    return "a" if score_a > score_b else "b"


def _prefer_more_of(words: frozenset[str], text_a: str, text_b: str) -> str:
    count = lambda text: sum(w in words for w in _words(text))  # noqa: E731
    return _prefer(count(text_a), count(text_b))


def positive(prompt: str, text_a: str, text_b: str) -> str:
    """Prefers the completion using more words from POSITIVE_WORDS."""
    return _prefer_more_of(POSITIVE_WORDS, text_a, text_b)


def gloomy(prompt: str, text_a: str, text_b: str) -> str:
    """Prefers the completion using more words from GLOOMY_WORDS."""
    return _prefer_more_of(GLOOMY_WORDS, text_a, text_b)


def shorter(prompt: str, text_a: str, text_b: str) -> str:
    """Prefers the completion with fewer words."""
    return _prefer(-len(_words(text_a)), -len(_words(text_b)))


def longer(prompt: str, text_a: str, text_b: str) -> str:
    """Prefers the completion with more words."""
    return _prefer(len(_words(text_a)), len(_words(text_b)))


def no_banned(prompt: str, text_a: str, text_b: str) -> str:
    """Prefers the completion that does not use BANNED_WORD (fewer uses wins)."""
    uses = lambda text: _words(text).count(BANNED_WORD)  # noqa: E731
    return _prefer(-uses(text_a), -uses(text_b))


BUILTIN: dict[str, Oracle] = {
    "positive": positive,
    "gloomy": gloomy,
    "shorter": shorter,
    "longer": longer,
    "no_banned": no_banned,
}


def resolve(name: str) -> Oracle:
    """A built-in oracle by name, or any function by dotted path ``package.module:function``."""
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, sep, attribute = name.partition(":")
    if not sep or not attribute:
        raise ValueError(f"unknown oracle {name!r}: use one of {', '.join(BUILTIN)} or package.module:function")
    try:
        oracle = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"oracle {name!r} cannot be loaded: {exc}") from None
    if not callable(oracle):
        raise ValueError(f"oracle {name!r} is not a function")
    return oracle
