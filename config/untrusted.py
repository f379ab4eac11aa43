"""What decoded JSON from outside (API bodies, prompt files) may hold before it goes near the database.

json.loads accepts things no column can store: NUL characters (PostgreSQL text
and jsonb refuse them), lone surrogates (not Unicode: psycopg cannot encode
them), numbers past 64 bits or past float range (1e400 decodes to inf), and
nesting deep enough to exhaust the stack of whatever walks it next. Finding
them here gives the sender an error naming the field instead of a server error.
"""

import math

MAX_DEPTH = 64  # no body or file this app reads nests beyond a few levels
_INT64 = 2**63


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as text, or None."""
    if "\x00" in text:
        return "contains a NUL character (U+0000), which text columns cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (
            f"contains U+{ord(text[exc.start]):04X}, a lone surrogate (a \\u escape, or a byte that is not UTF-8):"
            " not Unicode text"
        )
    return None


def json_problem(value: object, *, path: str = "") -> tuple[str, str] | None:
    """The first (field path, reason) in a decoded JSON value that cannot be stored, or None.

    Paths read like `config.beta` or `messages[0].content` (the root is `path`).
    Walks with an explicit stack: a recursive walk would fail on the very nesting it checks.
    """
    stack = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return where, f"is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str):
            reason = text_problem(item)
            if reason:
                return where, reason
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -_INT64 <= item < _INT64:
                return where, "is an integer beyond 64 bits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, "is not a finite number (too large for a 64-bit float)"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                # The key goes into an error message: escaped, so the message itself can be sent and printed.
                shown = key.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
                child_path = f"{where}.{shown}" if where else shown
                reason = text_problem(key)
                if reason:
                    return child_path, f"(the key) {reason}"
                stack.append((child_path, child, depth + 1))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child, depth + 1) for i, child in reversed(list(enumerate(item))))
    return None
